//! The Audit gRPC service (docs/operations.md O7): reads the trail, filtered and paged, with
//! the whole chain's verdict on every page. It never writes a row; appends belong to the actions
//! themselves (`crate::audit`).

use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use tonic::{Request, metadata::MetadataMap};

use crate::{
    audit::{ORG_CHAIN, Problem},
    domain::validate,
    error::{ApiError, ApiResult, RpcResult, reply},
    pb,
    state::Platform,
    store::{DbContext, entities::audit_event},
};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

pub struct AuditService {
    state: Platform,
}

impl AuditService {
    pub fn new(state: Platform) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditService {
    async fn list(&self, request: Request<pb::ListAuditRequest>) -> RpcResult<pb::AuditPage> {
        reply(self.list(request.metadata(), request.get_ref()).await)
    }

    async fn list_org(&self, request: Request<pb::ListAuditRequest>) -> RpcResult<pb::AuditPage> {
        reply(self.list_org(request.metadata(), request.get_ref()).await)
    }
}

impl AuditService {
    async fn list(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListAuditRequest,
    ) -> ApiResult<pb::AuditPage> {
        let id = validate::workspace_id(&request.workspace_id)?;
        self.state.auth.workspace(metadata, &id).await?;
        self.page(&id, request).await
    }

    async fn list_org(
        &self,
        metadata: &MetadataMap,
        request: &pb::ListAuditRequest,
    ) -> ApiResult<pb::AuditPage> {
        self.state.auth.admin(metadata).await?;
        self.page(ORG_CHAIN, request).await
    }

    /// One page of `chain`, oldest first, with the verdict on the whole chain.
    async fn page(&self, chain: &str, request: &pb::ListAuditRequest) -> ApiResult<pb::AuditPage> {
        let query = filtered(chain, request)?;
        let db = &self.state.db;
        let total = query.clone().count(db).await.context("query failed")?;
        let limit = match request.limit {
            limit if limit > MAX_LIMIT => MAX_LIMIT,
            limit if limit > 0 => limit,
            _ => DEFAULT_LIMIT,
        };
        let rows = query
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit as u64)
            .offset(request.offset.max(0) as u64)
            .all(db)
            .await
            .context("query failed")?;
        let verdict = self
            .state
            .audit
            .verify(db, chain)
            .await
            .context("query failed")?;
        Ok(pb::AuditPage {
            events: rows.into_iter().map(event_message).collect(),
            total,
            chain_valid: verdict.valid(),
            chain_problems: verdict.problems.into_iter().map(problem_message).collect(),
        })
    }
}

/// `chain`'s rows matching the request's filters.
fn filtered(chain: &str, request: &pb::ListAuditRequest) -> ApiResult<Select<audit_event::Entity>> {
    let mut query = audit_event::Entity::find().filter(audit_event::Column::Chain.eq(chain));
    let given = |value: &str| Some(value.to_owned()).filter(|value| !value.is_empty());
    if let Some(actor) = given(&request.actor) {
        query = query.filter(audit_event::Column::Actor.eq(actor));
    }
    if let Some(request_id) = given(&request.request_id) {
        query = query.filter(audit_event::Column::RequestId.eq(request_id));
    }
    if let Some(operation) = given(&request.operation) {
        query = query.filter(audit_event::Column::Operation.eq(operation));
    }
    if !request.from.is_empty() {
        let from = rfc3339(
            &request.from,
            "from must be RFC 3339 (e.g. 2026-04-17T00:00:00Z)",
        )?;
        query = query.filter(audit_event::Column::At.gte(from));
    }
    if !request.to.is_empty() {
        let to = rfc3339(
            &request.to,
            "to must be RFC 3339 (e.g. 2026-04-17T23:59:59Z)",
        )?;
        query = query.filter(audit_event::Column::At.lt(to));
    }
    Ok(query)
}

fn rfc3339(text: &str, refusal: &'static str) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|_| ApiError::bad_request(refusal))
}

fn event_message(row: audit_event::Model) -> pb::AuditEvent {
    pb::AuditEvent {
        id: row.id,
        seq: row.seq,
        at: Some(pb::timestamp(row.at)),
        actor: row.actor,
        operation: row.operation,
        target: row.target.unwrap_or_default(),
        workspace_id: row.workspace_id.unwrap_or_default(),
        request_id: row.request_id.unwrap_or_default(),
        details_json: row.details,
        prev_hash: row.prev_hash.unwrap_or_default(),
        hash: row.hash,
    }
}

fn problem_message(problem: Problem) -> pb::AuditProblem {
    pb::AuditProblem {
        seq: problem.seq,
        id: problem.id.unwrap_or_default(),
        problem: problem.what,
    }
}
