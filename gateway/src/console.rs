//! The operator console's HTTP side (docs/console.md): the page and its assets (and the API
//! reference at `/docs`), embedded in the binary and served under a strict Content-Security-Policy;
//! sign-in and sign-out, which turn an operator credential into an `HttpOnly`, `SameSite=Strict`
//! session cookie; and the saved canvas viewport. Whether a session is live is decided behind gRPC,
//! never here; the cookie's translation into a bearer is the edge's (`edge::admit_session_cookie`).

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    Gateway,
    edge::{ORIGIN_NOT_ALLOWED, SESSION_COOKIE, same_origin},
    error::{ErrorBody, RestError},
    forward::Forwarded,
    json::{go_float, parse_body, timestamp_opt},
    pb,
    workspaces::render,
};

/// The console's policy: its own scripts, styles and sockets, nothing inline, no framing.
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The console's files, compiled into the binary: no Node toolchain, and it works offline.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "tree.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/tree.js"),
    ),
    (
        "panel.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/panel.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
    (
        "docs.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/docs.js"),
    ),
    (
        "docs.css",
        "text/css; charset=utf-8",
        include_str!("../console/docs.css"),
    ),
];
const INDEX_HTML: &str = include_str!("../console/index.html");
const DOCS_HTML: &str = include_str!("../console/docs.html");

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    response
}

/// `GET /`: the console page.
pub(crate) async fn index() -> Response {
    asset_response("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /docs`: the API reference, rendered from `/openapi.json` by an embedded script.
pub(crate) async fn docs() -> Response {
    asset_response("text/html; charset=utf-8", DOCS_HTML)
}

/// `GET /console/{asset}`: one of the page's scripts or its stylesheet.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, body)) => asset_response(content_type, body),
        None => crate::edge::not_found().await,
    }
}

/// The cookie that holds `token` for `max_age` seconds; `Secure` when the caller came over TLS
/// or the public URL is `https://`.
fn set_cookie(
    gateway: &Gateway,
    forwarded: &Forwarded,
    token: &str,
    max_age: i64,
) -> Option<HeaderValue> {
    let secure =
        if gateway.edge.config.public_https || forwarded.platform_url().starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct SignInBody {
    /// The admin token or an org API key; empty in dev mode.
    #[serde(default)]
    token: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SessionBody {
    id: String,
    /// `admin`, `org:<key prefix>` or `dev`.
    principal: String,
    created_at: Option<String>,
    expires_at: Option<String>,
}

fn session_body(session: pb::ConsoleSession) -> SessionBody {
    SessionBody {
        created_at: timestamp_opt(session.created_at.as_ref()),
        expires_at: timestamp_opt(session.expires_at.as_ref()),
        id: session.id,
        principal: session.principal,
    }
}

#[utoipa::path(post, path = "/console/session", tag = "console",
    description = "Signs in: exchanges the admin token or an org key (in the body, never stored by the page) \
        for a session cookie (HttpOnly, SameSite=Strict, Secure behind TLS).",
    request_body = SignInBody,
    responses((status = 201, body = SessionBody, description = "signed in; Set-Cookie carries the session"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn sign_in(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A sign-in from another site's page would sign the operator into that site's choice.
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers) {
        return RestError::new(StatusCode::FORBIDDEN, ORIGIN_NOT_ALLOWED).into_response();
    }
    let body: SignInBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return err.early_response().unwrap_or_else(|| {
                RestError::new(StatusCode::BAD_REQUEST, "invalid request body").into_response()
            });
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = pb::SignInRequest {
        credential: body.token,
        user_agent,
    };
    let reply = match gateway.console.clone().sign_in(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return RestError::from(status).into_response(),
    };
    let Some(session) = reply.session else {
        return RestError::new(StatusCode::INTERNAL_SERVER_ERROR, "sign-in failed").into_response();
    };
    let max_age = session
        .expires_at
        .as_ref()
        .zip(session.created_at.as_ref())
        .map_or(0, |(expires, created)| expires.seconds - created.seconds);
    let mut response = (StatusCode::CREATED, axum::Json(session_body(session))).into_response();
    if let Some(cookie) = set_cookie(&gateway, &forwarded, &reply.token, max_age) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[utoipa::path(get, path = "/console/session", tag = "console",
    description = "The session the cookie (or a session bearer) names.",
    responses((status = 200, body = SessionBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn current_session(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
) -> Response {
    let result = gateway
        .console
        .clone()
        .get_session(forwarded.request(pb::GetSessionRequest {}))
        .await;
    render(StatusCode::OK, result, session_body)
}

#[utoipa::path(delete, path = "/console/session", tag = "console",
    description = "Signs out: ends the session server-side and clears the cookie. Idempotent.",
    responses((status = 204, description = "signed out"), (status = 403, body = ErrorBody)))]
pub(crate) async fn sign_out(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .console
        .clone()
        .sign_out(forwarded.request(pb::SignOutRequest {}))
        .await;
    if let Err(status) = result {
        return RestError::from(status).into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = set_cookie(&gateway, &forwarded, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize, Serialize, ToSchema)]
pub(crate) struct ViewportBody {
    #[serde(serialize_with = "go_float")]
    x: f64,
    #[serde(serialize_with = "go_float")]
    y: f64,
    #[serde(serialize_with = "go_float")]
    #[schema(exclusive_minimum = 0, maximum = 100)]
    zoom: f64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ViewportSaved {
    /// Always `saved`.
    status: &'static str,
}

#[utoipa::path(get, path = "/canvas/viewport", tag = "console",
    description = "The operator's saved pan and zoom; {x:0, y:0, zoom:1} before the first save.",
    responses((status = 200, body = ViewportBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_viewport(State(gateway): State<Gateway>, forwarded: Forwarded) -> Response {
    let result = gateway
        .console
        .clone()
        .get_viewport(forwarded.request(pb::GetViewportRequest {}))
        .await;
    render(StatusCode::OK, result, |viewport| ViewportBody {
        x: viewport.x,
        y: viewport.y,
        zoom: viewport.zoom,
    })
}

#[utoipa::path(put, path = "/canvas/viewport", tag = "console",
    request_body = ViewportBody,
    responses((status = 200, body = ViewportSaved), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn save_viewport(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    body: Body,
) -> Response {
    let body: ViewportBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => {
            return gateway
                .reject_body(&forwarded, None, err, "invalid viewport data")
                .await;
        }
    };
    let request = pb::Viewport {
        x: body.x,
        y: body.y,
        zoom: body.zoom,
    };
    let result = gateway
        .console
        .clone()
        .save_viewport(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |_| ViewportSaved {
        status: "saved",
    })
}
