//! The memory search query (docs/runtime.md §1): who may be read in each scope, and the
//! full-text match per backend: Postgres `tsvector` ranked by `ts_rank`, SQLite FTS5 ranked by
//! `bm25` (with the reader's visibility inside the FTS5 query, so only visible rows are ranked),
//! a substring for a one-character query. It builds SQL and nothing else (public so the
//! memories benchmark can run the very same statement as its direct-call baseline).

use sea_orm::{DbBackend, Statement, Value};

use crate::domain::{MemoryScope, WorkspaceStatus};

/// Whose memories one search may read.
pub struct Reader<'a> {
    pub id: &'a str,
    /// The live workspaces whose TEAM rows the reader sees (itself included); used by TEAM
    /// searches only.
    pub team: &'a [String],
}

/// What the caller asked for, already normalised.
pub struct Query<'a> {
    /// `None` reads the caller's own rows of every scope.
    pub scope: Option<MemoryScope>,
    pub text: &'a str,
    pub namespace: Option<&'a str>,
    pub limit: u64,
}

const COLUMNS: &str = "m.id, m.workspace_id, m.content, m.scope, m.namespace, m.created_at";

/// SQL text and its bound values, with numbered placeholders in the backend's syntax (`$1`,
/// `?1`), so a value can be used twice and bound in any order.
struct Sql {
    backend: DbBackend,
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

    fn bind_list(&mut self, values: &[String]) -> String {
        let placeholders: Vec<String> = values
            .iter()
            .map(|value| self.bind(value.as_str()))
            .collect();
        placeholders.join(", ")
    }
}

/// The statement for one search, or `None` when the query can match nothing (only
/// punctuation, or a TEAM search with no team).
pub fn statement(backend: DbBackend, reader: &Reader<'_>, query: &Query<'_>) -> Option<Statement> {
    if query.scope == Some(MemoryScope::Team) && reader.team.is_empty() {
        return None;
    }
    let mut sql = Sql {
        backend,
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
            let expression = fts5_expression(query.text, reader, query.scope)?;
            // Only the content column counts toward the rank (columns: memory_id, author,
            // scope, content).
            from = format!(
                "(SELECT memory_id, bm25(agent_memories_fts, 0.0, 0.0, 0.0, 1.0) AS rank \
                 FROM agent_memories_fts WHERE agent_memories_fts MATCH {}) f \
                 JOIN agent_memories m ON m.id = f.memory_id",
                sql.bind(expression)
            );
            order = format!("f.rank, {order}");
        }
    }
    let limit = sql.bind(query.limit as i64);
    let text = format!(
        "SELECT {COLUMNS} FROM {from} WHERE {} ORDER BY {order} LIMIT {limit}",
        conditions.join(" AND ")
    );
    Some(Statement::from_sql_and_values(backend, text, sql.values))
}

/// The rows a scope shows the reader (docs/runtime.md M1).
fn visibility(sql: &mut Sql, reader: &Reader<'_>, scope: Option<MemoryScope>) -> String {
    match scope {
        None => format!("m.workspace_id = {}", sql.bind(reader.id)),
        Some(MemoryScope::Local) => format!(
            "m.workspace_id = {} AND m.scope = 'LOCAL'",
            sql.bind(reader.id)
        ),
        Some(MemoryScope::Team) => format!(
            "m.scope = 'TEAM' AND m.workspace_id IN ({})",
            sql.bind_list(reader.team)
        ),
        Some(MemoryScope::Global) => format!(
            "m.scope = 'GLOBAL' AND m.workspace_id NOT IN \
             (SELECT w.id FROM workspaces w WHERE w.status = '{}')",
            WorkspaceStatus::Removed.as_str()
        ),
    }
}

/// A workspace id as the FTS5 table's `author` column stores it: one token.
fn author_token(id: &str) -> String {
    format!("\"w{}\"", id.replace('-', ""))
}

/// The query's words as an FTS5 expression that matches rows holding all of them, as
/// `plainto_tsquery` does, each quoted so no input is FTS5 syntax; and the reader's visibility
/// as column filters (the migration's triggers fill `author` and `scope`), so FTS5 ranks only
/// rows the reader may see.
fn fts5_expression(text: &str, reader: &Reader<'_>, scope: Option<MemoryScope>) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| format!("\"{word}\""))
        .collect();
    if words.is_empty() {
        return None;
    }
    let content = format!("content : ({})", words.join(" "));
    let visible = match scope {
        None => format!("author : {}", author_token(reader.id)),
        Some(MemoryScope::Local) => {
            format!("author : {} AND scope : \"local\"", author_token(reader.id))
        }
        Some(MemoryScope::Team) => {
            let team: Vec<String> = reader.team.iter().map(|id| author_token(id)).collect();
            format!("author : ({}) AND scope : \"team\"", team.join(" OR "))
        }
        Some(MemoryScope::Global) => "scope : \"global\"".to_owned(),
    };
    Some(format!("{content} AND {visible}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_quoted_words_within_what_the_reader_sees() {
        let team = ["a-1".to_owned(), "b-2".to_owned()];
        let reader = Reader {
            id: "a-1",
            team: &team,
        };
        assert_eq!(
            fts5_expression("deploy* OR \"x\" NEAR(y)", &reader, None).as_deref(),
            Some("content : (\"deploy\" \"OR\" \"x\" \"NEAR\" \"y\") AND author : \"wa1\"")
        );
        assert_eq!(
            fts5_expression("ship it", &reader, Some(MemoryScope::Team)).as_deref(),
            Some(
                "content : (\"ship\" \"it\") AND author : (\"wa1\" OR \"wb2\") AND scope : \"team\""
            )
        );
        assert_eq!(fts5_expression(" -- ", &reader, None).as_deref(), None);
    }

    #[test]
    fn like_wildcards_match_literally() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let team = ["w1".to_owned(), "p1".to_owned()];
        let reader = Reader {
            id: "w1",
            team: &team,
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
        assert_eq!(
            values[3],
            Value::from(
                "content : (\"deployments\") AND author : (\"ww1\" OR \"wp1\") AND scope : \"team\""
            )
        );
    }
}
