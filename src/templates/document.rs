//! The org template document (docs/operations.md §7): the reference's `org.yaml` shape, parsed
//! and checked whole before anything is written, each problem named by its field (and, for
//! YAML that does not parse into the shape, its line). Fields the reference reads for
//! containers (`workspace_dir`, `files_dir`, `channels`, …) are accepted and ignored. Pure: no
//! datastore, no filesystem.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    domain::validate,
    plugins::source,
    schedules::{Timing, TimingError},
};

/// Workspaces one document may create.
pub const MAX_WORKSPACES: usize = 500;
/// Levels of children below a top-level workspace.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrgTemplate {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// What makes an import idempotent: a second import under the same key creates nothing.
    /// Defaults to `name`.
    #[serde(default)]
    pub import_key: Option<String>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub workspaces: Vec<OrgWorkspace>,
    /// Seeded as GLOBAL memories of the first top-level workspace.
    #[serde(default)]
    pub global_memories: Vec<MemorySeed>,
    #[serde(default)]
    pub required_env: Vec<EnvRequirement>,
    #[serde(default)]
    pub recommended_env: Vec<EnvRequirement>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Defaults {
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub tier: i32,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub initial_memories: Vec<MemorySeed>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrgWorkspace {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub role: String,
    /// What the agent runs, written into its config.yaml; the workspace itself is external.
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub tier: i32,
    /// A workspace template whose files and config.yaml the workspace starts from.
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub system_prompt: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub initial_prompt: String,
    #[serde(default)]
    pub initial_memories: Vec<MemorySeed>,
    #[serde(default)]
    pub max_concurrent_tasks: i32,
    #[serde(default)]
    pub schedules: Vec<OrgSchedule>,
    #[serde(default)]
    pub canvas: Canvas,
    #[serde(default)]
    pub required_env: Vec<EnvRequirement>,
    #[serde(default)]
    pub recommended_env: Vec<EnvRequirement>,
    #[serde(default)]
    pub children: Vec<OrgWorkspace>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Canvas {
    #[serde(default)]
    pub x: f64,
    #[serde(default)]
    pub y: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OrgSchedule {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cron_expr: String,
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub prompt: String,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemorySeed {
    #[serde(default)]
    pub content: String,
    /// LOCAL, TEAM or GLOBAL; empty means LOCAL.
    #[serde(default)]
    pub scope: String,
}

/// A global secret the tree needs: one name, or any one of several.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvRequirement {
    Name(String),
    AnyOf { any_of: Vec<String> },
}

impl EnvRequirement {
    pub fn is_met(&self, configured: &BTreeSet<String>) -> bool {
        match self {
            Self::Name(name) => configured.contains(name),
            Self::AnyOf { any_of } => any_of.iter().any(|name| configured.contains(name)),
        }
    }
}

/// Why a document is refused: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError(pub String);

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn problem(field: &str, what: &str) -> DocumentError {
    DocumentError(format!("{field}: {what}"))
}

impl OrgTemplate {
    /// A YAML document; a syntax or shape error names its field and line.
    pub fn from_yaml(text: &str) -> Result<Self, DocumentError> {
        serde_yaml_ng::from_str::<Self>(text).map_err(|err| DocumentError(err.to_string()))
    }

    /// A JSON object (the reference's inline `template`); a shape error names its place.
    pub fn from_json(text: &str) -> Result<Self, DocumentError> {
        serde_json::from_str::<Self>(text).map_err(|err| DocumentError(err.to_string()))
    }

    /// The key this document is imported under.
    pub fn key(&self) -> &str {
        self.import_key
            .as_deref()
            .filter(|key| !key.trim().is_empty())
            .unwrap_or(&self.name)
    }

    /// SHA-256 of the document as parsed: the same for its YAML and JSON forms.
    pub fn digest(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a parsed document serializes");
        hex::encode(Sha256::digest(canonical))
    }

    /// Every workspace, parents before children, with its depth-first path.
    pub fn walk(&self) -> Vec<(String, &OrgWorkspace)> {
        fn visit<'a>(
            path: String,
            workspace: &'a OrgWorkspace,
            out: &mut Vec<(String, &'a OrgWorkspace)>,
        ) {
            out.push((path.clone(), workspace));
            for (index, child) in workspace.children.iter().enumerate() {
                visit(format!("{path}.children[{index}]"), child, out);
            }
        }
        let mut out = Vec::new();
        for (index, workspace) in self.workspaces.iter().enumerate() {
            visit(format!("workspaces[{index}]"), workspace, &mut out);
        }
        out
    }

    /// Every required (or recommended) secret of the template and its workspaces, once each.
    pub fn env(&self, required: bool) -> Vec<EnvRequirement> {
        let pick = |list: &Vec<EnvRequirement>| list.clone();
        let mut all: BTreeSet<EnvRequirement> = BTreeSet::new();
        let top = if required {
            &self.required_env
        } else {
            &self.recommended_env
        };
        all.extend(pick(top));
        for (_, workspace) in self.walk() {
            let own = if required {
                &workspace.required_env
            } else {
                &workspace.recommended_env
            };
            all.extend(pick(own));
        }
        all.into_iter().collect()
    }

    /// Checks what the shape cannot: required names, ranges, cron and zones, scopes, plugin
    /// names, and the size of the tree.
    pub fn check(&self) -> Result<(), DocumentError> {
        if self.name.trim().is_empty() {
            return Err(problem("name", "required"));
        }
        check_text("name", &self.name, "name")?;
        if self.key().len() > 255 {
            return Err(problem("import_key", "at most 255 bytes"));
        }
        if self.workspaces.is_empty() {
            return Err(problem("workspaces", "at least one workspace is required"));
        }
        check_tier("defaults.tier", self.defaults.tier)?;
        check_plugins("defaults.plugins", &self.defaults.plugins)?;
        check_memories("defaults.initial_memories", &self.defaults.initial_memories)?;
        check_memories("global_memories", &self.global_memories)?;
        for (index, requirement) in self.env(true).iter().chain(&self.env(false)).enumerate() {
            if let EnvRequirement::AnyOf { any_of } = requirement
                && any_of.is_empty()
            {
                return Err(problem(
                    &format!("required_env[{index}].any_of"),
                    "at least one name is required",
                ));
            }
        }
        let workspaces = self.walk();
        if workspaces.len() > MAX_WORKSPACES {
            return Err(problem(
                "workspaces",
                &format!("at most {MAX_WORKSPACES} workspaces"),
            ));
        }
        for (path, workspace) in workspaces {
            if path.matches(".children[").count() > MAX_DEPTH {
                return Err(problem(&path, &format!("nested deeper than {MAX_DEPTH}")));
            }
            check_workspace(&path, workspace)?;
        }
        Ok(())
    }
}

fn check_workspace(path: &str, workspace: &OrgWorkspace) -> Result<(), DocumentError> {
    let field = |name: &str| format!("{path}.{name}");
    if workspace.name.trim().is_empty() {
        return Err(problem(&field("name"), "required"));
    }
    for (name, value) in [
        ("name", &workspace.name),
        ("role", &workspace.role),
        ("model", &workspace.model),
        ("runtime", &workspace.runtime),
    ] {
        check_text(&field(name), value, name)?;
    }
    if !workspace.template.is_empty() && !validate::template(&workspace.template) {
        return Err(problem(
            &field("template"),
            "must be a relative name without ..",
        ));
    }
    check_tier(&field("tier"), workspace.tier)?;
    if workspace.max_concurrent_tasks < 0 {
        return Err(problem(&field("max_concurrent_tasks"), "must be >= 0"));
    }
    check_plugins(&field("plugins"), &workspace.plugins)?;
    check_memories(&field("initial_memories"), &workspace.initial_memories)?;
    for (index, schedule) in workspace.schedules.iter().enumerate() {
        let at = |name: &str| format!("{path}.schedules[{index}].{name}");
        if schedule.cron_expr.trim().is_empty() {
            return Err(problem(&at("cron_expr"), "required"));
        }
        if schedule.prompt.trim().is_empty() {
            return Err(problem(&at("prompt"), "required"));
        }
        let zone = Some(schedule.timezone.trim())
            .filter(|zone| !zone.is_empty())
            .unwrap_or("UTC");
        match Timing::parse(&schedule.cron_expr, zone) {
            Ok(_) => {}
            Err(TimingError::Expression) => {
                return Err(problem(&at("cron_expr"), "invalid cron expression"));
            }
            Err(TimingError::Zone(zone)) => {
                return Err(problem(
                    &at("timezone"),
                    &format!("unknown time zone {zone:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_text(field: &str, value: &str, kind: &str) -> Result<(), DocumentError> {
    validate::text_field(kind, value).map_err(|why| {
        problem(
            field,
            &match why {
                validate::FieldProblem::Newline => "must not contain newline characters".to_owned(),
                validate::FieldProblem::InvalidCharacters => {
                    "contains invalid characters".to_owned()
                }
                validate::FieldProblem::TooLong(cap) => format!("must be at most {cap} characters"),
            },
        )
    })
}

fn check_tier(field: &str, tier: i32) -> Result<(), DocumentError> {
    if (0..=4).contains(&tier) {
        Ok(())
    } else {
        Err(problem(field, "must be 0-4"))
    }
}

fn check_plugins(field: &str, plugins: &[String]) -> Result<(), DocumentError> {
    match plugins
        .iter()
        .position(|name| name.chars().count() > 128 || !source::valid_requested_name(name))
    {
        Some(index) => Err(problem(&format!("{field}[{index}]"), "invalid plugin name")),
        None => Ok(()),
    }
}

fn check_memories(field: &str, memories: &[MemorySeed]) -> Result<(), DocumentError> {
    for (index, memory) in memories.iter().enumerate() {
        let at = |name: &str| format!("{field}[{index}].{name}");
        if memory.content.trim().is_empty() {
            return Err(problem(&at("content"), "required"));
        }
        if !matches!(
            memory.scope.to_ascii_uppercase().as_str(),
            "" | "LOCAL" | "TEAM" | "GLOBAL"
        ) {
            return Err(problem(&at("scope"), "must be LOCAL, TEAM or GLOBAL"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_error_names_the_field_and_the_line() {
        let err = OrgTemplate::from_yaml(
            "name: team\nworkspaces:\n  - name: lead\n    children:\n      - name: helper\n        tier: high\n",
        )
        .unwrap_err();
        assert!(err.0.contains("workspaces[0].children[0].tier"), "{err}");
        assert!(err.0.contains("line 6"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let document = OrgTemplate::from_yaml(
            "name: team\nworkspaces:\n  - name: lead\n    schedules:\n      - cron_expr: '61 * * * *'\n        prompt: go\n",
        )
        .unwrap();
        let err = document.check().unwrap_err();
        assert!(
            err.0.starts_with("workspaces[0].schedules[0].cron_expr:"),
            "{err}"
        );
        let nameless = OrgTemplate::from_yaml("name: team\nworkspaces:\n  - role: x\n").unwrap();
        assert_eq!(
            nameless.check().unwrap_err().0,
            "workspaces[0].name: required"
        );
    }

    #[test]
    fn the_yaml_and_json_forms_of_a_document_have_one_digest() {
        let yaml = OrgTemplate::from_yaml("name: team\nworkspaces:\n  - name: lead\n").unwrap();
        let json = OrgTemplate::from_json(r#"{"name": "team", "workspaces": [{"name": "lead"}]}"#)
            .unwrap();
        assert_eq!(yaml.digest(), json.digest());
        assert_eq!(yaml.key(), "team");
    }

    #[test]
    fn unknown_container_fields_are_ignored() {
        let document = OrgTemplate::from_yaml(
            "name: team\nworkspaces:\n  - name: lead\n    workspace_dir: /srv\n    channels: [{type: slack}]\n",
        )
        .unwrap();
        assert!(document.check().is_ok());
    }
}
