//! Budgets and per-workspace metrics (docs/operations.md §5): a monthly limit in US cents, the
//! month's spend (the larger of what the agent reports and what the proxy measured, priced), and
//! today's usage as the reference's `/metrics`. It reads usage; the proxy's record writer writes
//! it, and the proxy refuses a call over budget with [`spend`].

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::{Alias, Expr, Func},
};
use serde_json::json;
use tonic::metadata::MetadataMap;

use crate::{
    domain::{
        EventType,
        usage::{self, micro_usd_to_cents},
        validate,
    },
    error::{ApiError, ApiResult},
    pb,
    store::{
        self, DbContext,
        entities::{usage_daily, workspace},
    },
};

use super::WorkspacesService;

/// Every way a budget change is refused, in the reference's words.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BudgetError {
    Required,
    Negative,
}

impl From<BudgetError> for ApiError {
    fn from(err: BudgetError) -> Self {
        ApiError::bad_request(match err {
            BudgetError::Required => "budget_limit field is required",
            BudgetError::Negative => "budget_limit must be >= 0 (USD cents)",
        })
    }
}

/// A workspace's month, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    pub limit: Option<i64>,
    pub reported: i64,
    pub measured: i64,
}

impl Spend {
    pub fn spent(&self) -> i64 {
        self.reported.max(self.measured)
    }

    /// Whether the limit is reached: no call goes through once it is.
    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.spent() >= limit)
    }
}

/// `id`'s limit and this month's spend, read now (never from a cache: the proxy decides on it).
/// `None` for an unknown workspace.
pub async fn spend(db: &impl ConnectionTrait, id: &str) -> Result<Option<Spend>, DbErr> {
    let Some((limit, reported)) = workspace::Entity::find_by_id(id.to_owned())
        .select_only()
        .column(workspace::Column::BudgetLimit)
        .column(workspace::Column::MonthlySpend)
        .into_tuple::<(Option<i64>, i64)>()
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let (start, end) = usage::month_bounds(store::now());
    let measured: Option<i64> = usage_daily::Entity::find()
        .select_only()
        // Postgres sums a BIGINT as NUMERIC; the cast keeps it an integer on both backends.
        .column_as(
            Expr::expr(Func::cast_as(
                Func::sum(Expr::col(usage_daily::Column::CostMicroUsd)),
                Alias::new("BIGINT"),
            )),
            "cost",
        )
        .filter(usage_daily::Column::WorkspaceId.eq(id))
        .filter(usage_daily::Column::Day.gte(start))
        .filter(usage_daily::Column::Day.lt(end))
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    Ok(Some(Spend {
        limit,
        reported,
        measured: micro_usd_to_cents(measured.unwrap_or(0)),
    }))
}

impl WorkspacesService {
    pub(super) async fn get_budget(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::Budget> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        self.budget(&self.state.db, &id).await
    }

    pub(super) async fn update_budget(
        &self,
        metadata: &MetadataMap,
        request: &pb::UpdateBudgetRequest,
    ) -> ApiResult<pb::Budget> {
        use pb::update_budget_request::Limit;
        let id = validate::workspace_id(&request.workspace_id)?;
        let operator = self.state.auth.admin(metadata).await?;
        store::live_workspace(&self.state.db, &id).await?;
        let limit = match request.limit {
            None => return Err(BudgetError::Required.into()),
            Some(Limit::Cents(cents)) if cents < 0 => return Err(BudgetError::Negative.into()),
            Some(Limit::Cents(cents)) => Some(cents),
            Some(Limit::Unlimited(_)) => None,
        };
        const FAILED: &str = "update failed";
        let txn = self.state.db.begin().await.context(FAILED)?;
        workspace::Entity::update_many()
            .col_expr(workspace::Column::BudgetLimit, Expr::value(limit))
            .col_expr(workspace::Column::UpdatedAt, Expr::value(store::now()))
            .filter(workspace::Column::Id.eq(id.clone()))
            .exec(&txn)
            .await
            .context(FAILED)?;
        // Every replica drops its cached route on this event, so the proxy sees the new limit.
        let event = self
            .state
            .events
            .insert(
                &txn,
                EventType::BudgetUpdated,
                Some(&id),
                json!({"budget_limit": limit}),
            )
            .await
            .context(FAILED)?;
        self.audited(
            &txn,
            &operator,
            metadata,
            "workspace.budget",
            &id,
            None,
            json!({"budget_limit": limit}),
            FAILED,
        )
        .await?;
        let budget = self.budget(&txn, &id).await?;
        txn.commit().await.context(FAILED)?;
        self.state.events.publish_all([event]);
        Ok(budget)
    }

    async fn budget(&self, db: &impl ConnectionTrait, id: &str) -> ApiResult<pb::Budget> {
        let spend = spend(db, id)
            .await
            .context("query failed")?
            .ok_or_else(|| ApiError::not_found(validate::WORKSPACE_NOT_FOUND))?;
        let (start, end) = usage::month_bounds(store::now());
        Ok(pb::Budget {
            workspace_id: id.to_owned(),
            budget_limit: spend.limit,
            monthly_spend: spend.spent(),
            budget_remaining: spend.limit.map(|limit| limit - spend.spent()),
            reported_spend: spend.reported,
            measured_spend: spend.measured,
            period_start: Some(pb::timestamp(start)),
            period_end: Some(pb::timestamp(end)),
        })
    }

    pub(super) async fn get_metrics(
        &self,
        metadata: &MetadataMap,
        raw_id: &str,
    ) -> ApiResult<pb::WorkspaceMetrics> {
        let id = self.state.auth.live_workspace(metadata, raw_id).await?;
        let today = usage::day_start(store::now());
        let row = usage_daily::Entity::find_by_id((id, today))
            .one(&self.state.db)
            .await
            .context("failed to fetch metrics")?;
        let tomorrow: DateTime<Utc> = today + chrono::TimeDelta::days(1);
        Ok(pb::WorkspaceMetrics {
            input_tokens: row.as_ref().map_or(0, |row| row.input_tokens),
            output_tokens: row.as_ref().map_or(0, |row| row.output_tokens),
            total_calls: row.as_ref().map_or(0, |row| row.calls),
            estimated_cost_micro_usd: row.as_ref().map_or(0, |row| row.cost_micro_usd),
            period_start: Some(pb::timestamp(today)),
            period_end: Some(pb::timestamp(tomorrow)),
        })
    }
}
