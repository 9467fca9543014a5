//! The memory search query (docs/runtime.md §1): who may be read in each scope, and the
//! full-text match per backend: Postgres `tsvector` ranked by `ts_rank`, SQLite FTS5 ranked by
//! `bm25`, a substring for a one-character query. It builds SQL and nothing else.

use sea_orm::{DbBackend, Statement, Value};

use crate::domain::{MemoryScope, WorkspaceStatus};

/// Whose memories one search may read.
pub(super) struct Reader<'a> {
    pub(super) id: &'a str,
    pub(super) parent: Option<&'a str>,
}

/// What the caller asked for, already normalised.
pub(super) struct Query<'a> {
    /// `None` reads the caller's own rows of every scope.
    pub(super) scope: Option<MemoryScope>,
    pub(super) text: &'a str,
    pub(super) namespace: Option<&'a str>,
    pub(super) limit: u64,
}

const COLUMNS: &str = "m.id, m.workspace_id, m.content, m.scope, m.namespace, m.created_at";

/// SQL text and its bound values, with numbered placeholders in the backend's syntax (`$1`,
/// `?1`), so a value can be used twice and bound in any order.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => format!("?{}", self.values.len()),
        }
    }
}

/// The statement for one search, or `None` when the query can match nothing (only
/// punctuation or stop words).
pub(super) fn statement(
    backend: DbBackend,
    reader: &Reader<'_>,
    query: &Query<'_>,
) -> Option<Statement> {
    let mut sql = Sql {
        backend,
        text: String::new(),
        values: Vec::new(),
    };
    let mut from = "agent_memories m".to_owned();
    let mut conditions = vec![visibility(&mut sql, reader, query.scope)];
    let mut order = "m.created_at DESC, m.id DESC".to_owned();
    if let Some(namespace) = query.namespace {
        conditions.push(format!("m.namespace = {}", sql.bind(namespace)));
    }
    match query.text.len() {
        0 => {}
        1 => {
            let pattern = format!("%{}%", escape_like(&query.text.to_lowercase()));
            conditions.push(format!(
                "lower(m.content) LIKE {} ESCAPE '\\'",
                sql.bind(pattern)
            ));
        }
        _ if backend == DbBackend::Postgres => {
            let text = sql.bind(query.text);
            conditions.push(format!(
                "m.content_tsv @@ plainto_tsquery('english', {text})"
            ));
            order =
                format!("ts_rank(m.content_tsv, plainto_tsquery('english', {text})) DESC, {order}");
        }
        _ => {
            let expression = fts5_expression(query.text)?;
            from = format!(
                "(SELECT memory_id, bm25(agent_memories_fts) AS rank FROM agent_memories_fts \
                 WHERE agent_memories_fts MATCH {}) f JOIN agent_memories m ON m.id = f.memory_id",
                sql.bind(expression)
            );
            order = format!("f.rank, {order}");
        }
    }
    let limit = sql.bind(query.limit as i64);
    sql.text = format!(
        "SELECT {COLUMNS} FROM {from} WHERE {} ORDER BY {order} LIMIT {limit}",
        conditions.join(" AND ")
    );
    Some(Statement::from_sql_and_values(
        backend, sql.text, sql.values,
    ))
}

/// The rows a scope shows the reader (docs/runtime.md M1).
fn visibility(sql: &mut Sql, reader: &Reader<'_>, scope: Option<MemoryScope>) -> String {
    let removed = WorkspaceStatus::Removed.as_str();
    match scope {
        None => format!("m.workspace_id = {}", sql.bind(reader.id)),
        Some(MemoryScope::Local) => format!(
            "m.workspace_id = {} AND m.scope = 'LOCAL'",
            sql.bind(reader.id)
        ),
        // Self, own children and, under a parent, the parent and its other children.
        Some(MemoryScope::Team) => {
            let me = sql.bind(reader.id);
            let mut team = format!("w.id = {me} OR w.parent_id = {me}");
            if let Some(parent) = reader.parent {
                let parent = sql.bind(parent);
                team.push_str(&format!(" OR w.id = {parent} OR w.parent_id = {parent}"));
            }
            format!(
                "m.scope = 'TEAM' AND m.workspace_id IN \
                 (SELECT w.id FROM workspaces w WHERE ({team}) AND w.status <> '{removed}')"
            )
        }
        Some(MemoryScope::Global) => format!(
            "m.scope = 'GLOBAL' AND m.workspace_id NOT IN \
             (SELECT w.id FROM workspaces w WHERE w.status = '{removed}')"
        ),
    }
}

/// `%`, `_` and the escape itself match literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The words of a query as an FTS5 expression that matches rows holding all of them, as
/// `plainto_tsquery` does: each word quoted, so no input is FTS5 syntax.
fn fts5_expression(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| format!("\"{word}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_quoted_words() {
        assert_eq!(
            fts5_expression("deploy* OR \"x\" NEAR(y)").as_deref(),
            Some("\"deploy\" \"OR\" \"x\" \"NEAR\" \"y\"")
        );
        assert_eq!(fts5_expression(" -- ").as_deref(), None);
    }

    #[test]
    fn like_wildcards_match_literally() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let reader = Reader {
            id: "w1",
            parent: Some("p1"),
        };
        let query = Query {
            scope: Some(MemoryScope::Team),
            text: "deployments",
            namespace: Some("general"),
            limit: 10,
        };
        let postgres = statement(DbBackend::Postgres, &reader, &query).unwrap();
        assert!(
            postgres
                .sql
                .contains("ts_rank(m.content_tsv, plainto_tsquery('english', $4))"),
            "{}",
            postgres.sql
        );
        assert!(postgres.sql.ends_with("LIMIT $5"), "{}", postgres.sql);
        let sqlite = statement(DbBackend::Sqlite, &reader, &query).unwrap();
        assert!(sqlite.sql.contains("MATCH ?4"), "{}", sqlite.sql);
        let values = sqlite.values.unwrap().0;
        assert_eq!(values[3], Value::from("\"deployments\""));
    }
}
