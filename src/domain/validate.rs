//! Input rules for workspace fields (docs/workspaces.md §2.1, §2.4), as pure functions so both
//! create and patch apply the same rules and tests can pin them down without a server.

use crate::error::{ApiError, ApiResult};

pub const INVALID_WORKSPACE_ID: &str = "invalid workspace ID";
/// Unknown and removed workspaces answer alike.
pub const WORKSPACE_NOT_FOUND: &str = "workspace not found";

/// Accepts the canonical 8-4-4-4-12 hex form in any case and returns it lowercase.
pub fn workspace_id(raw: &str) -> ApiResult<String> {
    parse_uuid(raw).ok_or_else(|| ApiError::bad_request(INVALID_WORKSPACE_ID))
}

pub fn parse_uuid(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let canonical = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    canonical.then(|| raw.to_ascii_lowercase())
}

const FORBIDDEN_NAME_CHARS: &[char] = &['{', '}', '[', ']', '|', '>', '*', '&', '!'];
const SYSTEM_DIRS: &[&str] = &[
    "/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr",
];
pub const WORKSPACE_ACCESS_VALUES: &[&str] = &["none", "read_only", "read_write"];

/// Why a text field is rejected; the two endpoints word it differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    Newline,
    InvalidCharacters,
    TooLong(usize),
}

/// Checks name/role/model/runtime: no line breaks, no markup characters in name and role, and
/// a byte cap.
pub fn text_field(field: &str, value: &str) -> Result<(), FieldProblem> {
    if value.contains(['\n', '\r']) {
        return Err(FieldProblem::Newline);
    }
    if matches!(field, "name" | "role") && value.contains(FORBIDDEN_NAME_CHARS) {
        return Err(FieldProblem::InvalidCharacters);
    }
    let cap = match field {
        "name" => 255,
        "role" => 1000,
        _ => 100,
    };
    if value.len() > cap {
        return Err(FieldProblem::TooLong(cap));
    }
    Ok(())
}

/// The PATCH wording of a text-field problem (docs/workspaces.md §2.4).
pub fn patch_text_field(field: &str, value: &str) -> ApiResult<()> {
    text_field(field, value).map_err(|problem| {
        ApiError::bad_request(match problem {
            FieldProblem::Newline => format!("{field} must not contain newline characters"),
            FieldProblem::InvalidCharacters => format!("{field} contains invalid characters"),
            FieldProblem::TooLong(cap) => format!("{field} must be at most {cap} characters"),
        })
    })
}

/// Absolute, no `..`, and not a system directory or below one.
pub fn workspace_dir(dir: &str) -> bool {
    if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
        return false;
    }
    let trimmed = dir.trim_end_matches('/');
    !SYSTEM_DIRS
        .iter()
        .any(|sys| trimmed == *sys || trimmed.starts_with(&format!("{sys}/")))
        && !trimmed.is_empty()
}

/// A template names a directory under the templates root: relative, without `..`.
pub fn template(name: &str) -> bool {
    !name.starts_with('/')
        && !name.starts_with('\\')
        && !name.split(['/', '\\']).any(|part| part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_uuids_normalised_to_lowercase() {
        assert_eq!(
            workspace_id("6F1C0B3E-1D2A-4B5C-8D9E-0A1B2C3D4E5F").unwrap(),
            "6f1c0b3e-1d2a-4b5c-8d9e-0a1b2c3d4e5f"
        );
        for bad in [
            "",
            "not-a-uuid",
            "6f1c0b3e1d2a4b5c8d9e0a1b2c3d4e5f",
            "{6f1c0b3e-1d2a-4b5c-8d9e-0a1b2c3d4e5f}",
            "6f1c0b3e-1d2a-4b5c-8d9e-0a1b2c3d4e5g",
        ] {
            assert_eq!(
                workspace_id(bad).unwrap_err().message,
                INVALID_WORKSPACE_ID,
                "{bad}"
            );
        }
    }

    #[test]
    fn text_fields_reject_newlines_markup_and_overlength() {
        assert_eq!(text_field("name", "a\nb"), Err(FieldProblem::Newline));
        assert_eq!(
            text_field("role", "a|b"),
            Err(FieldProblem::InvalidCharacters)
        );
        assert_eq!(text_field("model", "a|b"), Ok(()));
        assert_eq!(
            text_field("name", &"x".repeat(256)),
            Err(FieldProblem::TooLong(255))
        );
        assert_eq!(
            text_field("runtime", &"x".repeat(101)),
            Err(FieldProblem::TooLong(100))
        );
        assert_eq!(
            patch_text_field("name", "a>b").unwrap_err().message,
            "name contains invalid characters"
        );
    }

    #[test]
    fn workspace_dirs_must_be_absolute_and_outside_system_dirs() {
        assert!(workspace_dir("/home/agent/work"));
        assert!(workspace_dir("/usrdata"));
        for bad in ["relative", "/etc", "/usr/local", "/home/../etc", "/var/"] {
            assert!(!workspace_dir(bad), "{bad}");
        }
    }

    #[test]
    fn templates_stay_under_the_root() {
        assert!(template("researcher"));
        assert!(template("team/researcher"));
        assert!(!template("/abs"));
        assert!(!template("../escape"));
        assert!(!template("a/../../b"));
    }
}
