//! Budgets and per-workspace metrics (docs/operations.md §5): the reference's shapes and words,
//! spend measured from the usage answers report, and the proxy's 402 from the very next call
//! once the limit is crossed, on whichever replica it lands.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    a2a::{agent_at, fake_agent, send},
    helpers::{Backend, Options, TestApp, eventually, spawn_app, spawn_on},
};

/// A call whose answer reports 10,000 input and 1,000 output tokens: 4.5 cents at the default
/// prices ($3 and $15 a million).
fn costly_call() -> Value {
    json!({"method": "message/send", "params": {
        "message": {"role": "user", "parts": [{"kind": "text", "text": "think hard"}]},
        "metadata": {"usage": {"input_tokens": 10_000, "output_tokens": 1_000}},
    }})
}

async fn set_limit(app: &TestApp, id: &str, body: Value) -> crate::helpers::Reply {
    app.admin(
        Method::PATCH,
        &format!("/workspaces/{id}/budget"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_budget_is_read_and_set_in_the_reference_shapes() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("budgeted", None).await;

    let budget = app
        .get(&format!("/workspaces/{id}/budget"), Some(&token))
        .await;
    assert_eq!(budget.status, StatusCode::OK, "{}", budget.text);
    let period_start = budget.body["period_start"].as_str().unwrap().to_owned();
    assert!(period_start.ends_with("-01T00:00:00Z"), "{period_start}");
    assert_eq!(
        budget.body,
        json!({
            "budget_limit": null, "monthly_spend": 0, "budget_remaining": null,
            "reported_spend": 0, "measured_spend": 0, "period": "monthly",
            "period_start": period_start, "period_end": budget.body["period_end"],
        })
    );

    // A workspace cannot raise its own ceiling.
    let own = app
        .call(
            Method::PATCH,
            &format!("/workspaces/{id}/budget"),
            Some(&token),
            Some(json!({"budget_limit": 1_000_000})),
        )
        .await;
    assert_eq!(own.status, StatusCode::UNAUTHORIZED, "{}", own.text);
    for (body, error) in [
        (json!({}), "budget_limit field is required"),
        (
            json!({"budget_limit": -5}),
            "budget_limit must be >= 0 (USD cents)",
        ),
        (
            json!({"budget_limit": -0.5}),
            "budget_limit must be >= 0 (USD cents)",
        ),
        (
            json!({"budget_limit": "500"}),
            "budget_limit must be an integer (USD cents) or null",
        ),
        (
            json!({"budget_limit": 1.5}),
            "budget_limit must be an integer (USD cents) or null",
        ),
        (json!([1]), "invalid request body"),
    ] {
        let reply = set_limit(&app, &id, body.clone()).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "{body}"
        );
    }
    let unchanged = app.admin_get(&format!("/workspaces/{id}/budget")).await;
    assert_eq!(unchanged.body["budget_limit"], Value::Null);

    let set = set_limit(&app, &id, json!({"budget_limit": 500})).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(
        (&set.body["budget_limit"], &set.body["budget_remaining"]),
        (&json!(500), &json!(500))
    );
    // An integral float is the integer, as everywhere.
    let float = set_limit(&app, &id, json!({"budget_limit": 250.0})).await;
    assert_eq!(float.body["budget_limit"], 250);
    let cleared = set_limit(&app, &id, json!({"budget_limit": null})).await;
    assert_eq!(
        (
            &cleared.body["budget_limit"],
            &cleared.body["budget_remaining"]
        ),
        (&Value::Null, &Value::Null)
    );
    assert!(
        app.event_types(&id)
            .await
            .contains(&"WORKSPACE_BUDGET_UPDATED".to_owned())
    );
    let unknown = app
        .admin_get("/workspaces/00000000-0000-4000-8000-000000000000/budget")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_call_after_the_limit_is_crossed_gets_402_and_metrics_count_the_day() {
    let app = spawn_app().await;
    let (base, _seen) = fake_agent().await;
    let (id, token) = agent_at(&app, "spender", None, &format!("{base}/usage")).await;
    assert_eq!(
        set_limit(&app, &id, json!({"budget_limit": 10}))
            .await
            .status,
        StatusCode::OK
    );

    // 4.5, 9 and 13.5 cents: the third call crosses the limit and is still answered.
    for _ in 0..3 {
        let reply = send(&app, &id, None, Some(&app.admin_token), costly_call(), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let refused = send(&app, &id, None, Some(&app.admin_token), costly_call(), &[]).await;
    assert_eq!(
        (refused.status, refused.text.as_str()),
        (
            StatusCode::PAYMENT_REQUIRED,
            r#"{"error":"workspace budget limit exceeded"}"#
        )
    );

    let budget = app
        .get(&format!("/workspaces/{id}/budget"), Some(&token))
        .await;
    assert_eq!(
        [
            &budget.body["monthly_spend"],
            &budget.body["measured_spend"],
            &budget.body["budget_remaining"]
        ],
        [&json!(14), &json!(14), &json!(-4)]
    );
    let metrics = app
        .get(&format!("/workspaces/{id}/metrics"), Some(&token))
        .await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    let start = metrics.body["period_start"].as_str().unwrap();
    assert!(start.ends_with("T00:00:00Z"), "{start}");
    assert_eq!(
        metrics.body,
        json!({
            "input_tokens": 30_000, "output_tokens": 3_000, "total_calls": 3,
            "estimated_cost_usd": "0.135000",
            "period_start": start, "period_end": metrics.body["period_end"],
        })
    );

    // Raising the limit lets calls through at once.
    set_limit(&app, &id, json!({"budget_limit": 1_000})).await;
    let again = send(&app, &id, None, Some(&app.admin_token), costly_call(), &[]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);

    // What the agent reports on its heartbeats counts too, when it is more.
    let beat = app
        .heartbeat(&id, &token, json!({"monthly_spend": 5_000}))
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.text);
    eventually(10, || async {
        let reply = send(&app, &id, None, Some(&app.admin_token), costly_call(), &[]).await;
        (reply.status == StatusCode::PAYMENT_REQUIRED).then_some(())
    })
    .await;
    let budget = app.admin_get(&format!("/workspaces/{id}/budget")).await;
    assert_eq!(
        (
            &budget.body["monthly_spend"],
            &budget.body["reported_spend"]
        ),
        (&json!(5_000), &json!(5_000))
    );
}

/// The crossing call lands on one replica, the next on the other: it is refused there too,
/// and a limit raised on one replica is honoured by the other on the next call.
#[tokio::test]
async fn every_replica_refuses_the_next_call() {
    let backend = Backend::fresh().await.with_redis();
    let first = spawn_on(backend.clone(), Options::default()).await;
    let second = spawn_on(backend, Options::default()).await;
    let (base, _seen) = fake_agent().await;
    let (id, _) = agent_at(&first, "shared", None, &format!("{base}/usage")).await;
    // The second replica caches the route while there is no limit.
    let warm = send(
        &second,
        &id,
        None,
        Some(&second.admin_token),
        costly_call(),
        &[],
    )
    .await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.text);
    set_limit(&first, &id, json!({"budget_limit": 10})).await;
    eventually(10, || async {
        let budget = second.admin_get(&format!("/workspaces/{id}/budget")).await;
        (budget.body["budget_limit"] == 10).then_some(())
    })
    .await;

    // 9 cents, then 13.5: the second replica's second call crosses the limit.
    for _ in 0..2 {
        let reply = send(
            &second,
            &id,
            None,
            Some(&second.admin_token),
            costly_call(),
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    let on_first = send(
        &first,
        &id,
        None,
        Some(&first.admin_token),
        costly_call(),
        &[],
    )
    .await;
    assert_eq!(
        on_first.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        on_first.text
    );

    set_limit(&second, &id, json!({"budget_limit": null})).await;
    let reopened = eventually(10, || async {
        let reply = send(
            &first,
            &id,
            None,
            Some(&first.admin_token),
            costly_call(),
            &[],
        )
        .await;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;
    assert_eq!(reopened.status, StatusCode::OK);
}
