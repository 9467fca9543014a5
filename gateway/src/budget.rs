//! Budget and metrics routes (docs/operations.md §5), in the reference's shapes: the month's
//! limit and spend in US cents, and today's token usage with its estimated cost.

use axum::{
    body::Body,
    extract::{Path, State},
    response::Response,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    Gateway,
    error::ErrorBody,
    forward::Forwarded,
    json::{BodyError, parse_body, present, timestamp_opt},
    pb,
    workspaces::render,
};

/// `PATCH /workspaces/{id}/budget`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateBudgetBody {
    /// US cents a calendar month (UTC), zero or more; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(required = true, value_type = Option<i64>, minimum = 0)]
    budget_limit: Option<Value>,
}

/// A workspace's month.
#[derive(Serialize, ToSchema)]
pub(crate) struct BudgetView {
    /// Cents a month; null means no limit.
    budget_limit: Option<i64>,
    /// Cents spent this month: the larger of `reported_spend` and `measured_spend`.
    monthly_spend: i64,
    /// `budget_limit - monthly_spend` (negative once overspent); null without a limit.
    budget_remaining: Option<i64>,
    /// What the agent reports on its heartbeats.
    reported_spend: i64,
    /// The month's token usage through the A2A proxy, priced, rounded up to a cent.
    measured_spend: i64,
    /// Always `monthly`.
    period: &'static str,
    period_start: Option<String>,
    period_end: Option<String>,
}

impl From<pb::Budget> for BudgetView {
    fn from(budget: pb::Budget) -> Self {
        Self {
            budget_limit: budget.budget_limit,
            monthly_spend: budget.monthly_spend,
            budget_remaining: budget.budget_remaining,
            reported_spend: budget.reported_spend,
            measured_spend: budget.measured_spend,
            period: "monthly",
            period_start: timestamp_opt(budget.period_start.as_ref()),
            period_end: timestamp_opt(budget.period_end.as_ref()),
        }
    }
}

/// Today's usage, as the reference's `/metrics`.
#[derive(Serialize, ToSchema)]
pub(crate) struct MetricsView {
    input_tokens: i64,
    output_tokens: i64,
    total_calls: i64,
    /// US dollars with six decimals, as a string (`"0.004500"`).
    estimated_cost_usd: String,
    period_start: Option<String>,
    period_end: Option<String>,
}

/// Whole seconds, as the reference prints these bounds (`2026-04-17T00:00:00Z`).
fn period_bound(at: Option<&prost_types::Timestamp>) -> Option<String> {
    at.and_then(|at| chrono::DateTime::from_timestamp(at.seconds, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

const ID: &str = "workspace id";

#[utoipa::path(get, path = "/workspaces/{id}/budget", tag = "workspaces",
    description = "The month's limit and spend, in US cents. The A2A proxy answers 402 once the spend reaches the limit.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = BudgetView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::GetBudgetRequest { workspace_id: id };
    let result = gateway
        .workspaces
        .clone()
        .get_budget(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, BudgetView::from)
}

#[utoipa::path(patch, path = "/workspaces/{id}/budget", tag = "workspaces",
    description = "Sets or removes the monthly limit. Operators only: a workspace cannot raise its own ceiling.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    request_body = UpdateBudgetBody,
    responses((status = 200, body = BudgetView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn update(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    use pb::update_budget_request::Limit;
    let refuse = |err, message| gateway.reject_body(&forwarded, None, err, message);
    let body: UpdateBudgetBody = match parse_body(body).await {
        Ok(body) => body,
        Err(err) => return refuse(err, "invalid request body").await,
    };
    let limit = match body.budget_limit {
        None => None,
        Some(Value::Null) => Some(Limit::Unlimited(true)),
        // `500.0` is 500, as everywhere (see `json::parse_body`).
        Some(value) => match value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|n| n.fract() == 0.0 && n.abs() < 9.2e18)
                .map(|n| n as i64)
        }) {
            Some(cents) => Some(Limit::Cents(cents)),
            None => {
                let message = match value.as_f64() {
                    Some(number) if number < 0.0 => "budget_limit must be >= 0 (USD cents)",
                    _ => "budget_limit must be an integer (USD cents) or null",
                };
                return refuse(BodyError::Invalid, message).await;
            }
        },
    };
    let request = pb::UpdateBudgetRequest {
        workspace_id: id,
        limit,
    };
    let result = gateway
        .workspaces
        .clone()
        .update_budget(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, BudgetView::from)
}

#[utoipa::path(get, path = "/workspaces/{id}/metrics", tag = "workspaces",
    description = "Today's (UTC) token usage through the A2A proxy and its estimated cost.",
    params(("id" = String, Path, format = Uuid, description = ID)),
    responses((status = 200, body = MetricsView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn metrics(
    State(gateway): State<Gateway>,
    forwarded: Forwarded,
    Path(id): Path<String>,
) -> Response {
    let request = pb::GetMetricsRequest { workspace_id: id };
    let result = gateway
        .workspaces
        .clone()
        .get_metrics(forwarded.request(request))
        .await;
    render(StatusCode::OK, result, |metrics| MetricsView {
        input_tokens: metrics.input_tokens,
        output_tokens: metrics.output_tokens,
        total_calls: metrics.total_calls,
        estimated_cost_usd: format!(
            "{}.{:06}",
            metrics.estimated_cost_micro_usd / 1_000_000,
            metrics.estimated_cost_micro_usd % 1_000_000
        ),
        period_start: period_bound(metrics.period_start.as_ref()),
        period_end: period_bound(metrics.period_end.as_ref()),
    })
}
