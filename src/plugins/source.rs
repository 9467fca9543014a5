//! Plugin sources: parsing `<scheme>://<spec>` and fetching a tree from it (a directory under
//! the plugins dir, or a pinned shallow clone from GitHub). It decides nothing about auth, and
//! never echoes a resolver's own error text to a caller.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::warn;

use super::error::{FetchFailure, PluginError};

/// Every scheme a source may use, sorted.
pub const SCHEMES: [&str; 2] = ["github", "local"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local {
        name: String,
    },
    Github {
        owner: String,
        repo: String,
        reference: Option<String>,
    },
}

/// A name as requested in a URL: non-empty, no separators, no `..`, its own basename.
pub fn valid_requested_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\\'])
        && !name.contains("..")
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

/// A directory name under the plugins dir: `^[a-z0-9][a-z0-9._-]{0,127}$`.
pub fn valid_local_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.len() <= 128
}

fn github_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Source {
    /// Parses a source as given (already URL-decoded). A value without a scheme is `local`.
    pub fn parse(raw: &str, allow_unpinned: bool) -> Result<Self, PluginError> {
        let (scheme, spec) = raw.split_once("://").unwrap_or(("local", raw));
        match scheme {
            "local" => {
                if spec.is_empty() {
                    return Err(PluginError::InvalidSource);
                }
                if !valid_local_name(spec) {
                    return Err(PluginError::InvalidName);
                }
                Ok(Self::Local {
                    name: spec.to_owned(),
                })
            }
            "github" => {
                let (path, reference) = match spec.split_once('#') {
                    Some((path, reference)) => (path, Some(reference)),
                    None => (spec, None),
                };
                let Some((owner, repo)) = path.split_once('/') else {
                    return Err(PluginError::InvalidSource);
                };
                let repo = repo.strip_suffix(".git").unwrap_or(repo);
                let reference_ok = reference.is_none_or(|r| {
                    !r.is_empty()
                        && !r.starts_with('-')
                        && r.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
                });
                if !github_part(owner) || !github_part(repo) || !reference_ok {
                    return Err(PluginError::InvalidSource);
                }
                if reference.is_none() && !allow_unpinned {
                    return Err(PluginError::Unpinned {
                        source: raw.to_owned(),
                    });
                }
                Ok(Self::Github {
                    owner: owner.to_owned(),
                    repo: repo.to_owned(),
                    reference: reference.map(str::to_owned),
                })
            }
            _ => Err(PluginError::UnknownScheme),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Github { .. } => "github",
        }
    }

    /// The plugin this source yields: the directory name, or the repository name.
    pub fn plugin_name(&self) -> &str {
        match self {
            Self::Local { name } => name,
            Self::Github { repo, .. } => repo,
        }
    }

    pub fn canonical(&self) -> String {
        match self {
            Self::Local { name } => format!("local://{name}"),
            Self::Github {
                owner,
                repo,
                reference,
            } => match reference {
                Some(reference) => format!("github://{owner}/{repo}#{reference}"),
                None => format!("github://{owner}/{repo}"),
            },
        }
    }

    /// Fetches the tree; `raw` is echoed in errors as the caller wrote it.
    pub async fn fetch(
        &self,
        plugins_dir: &Path,
        timeout: Duration,
        raw: &str,
    ) -> Result<Tree, PluginError> {
        let failed = |failure: FetchFailure| PluginError::Fetch {
            failure,
            scheme: self.scheme(),
            source: raw.to_owned(),
        };
        match self {
            Self::Local { name } => {
                let path = plugins_dir.join(name);
                let exists = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || super::archive::is_plain_dir(&path)
                })
                .await
                .unwrap_or(false);
                if exists {
                    Ok(Tree {
                        path,
                        scratch: false,
                    })
                } else {
                    Err(failed(FetchFailure::Missing))
                }
            }
            Self::Github {
                owner,
                repo,
                reference,
            } => {
                let scratch = std::env::temp_dir()
                    .join(format!("molecule-plugin-{}", uuid::Uuid::new_v4().simple()));
                let tree = Tree {
                    path: scratch.join(repo),
                    scratch: true,
                };
                let mut git = tokio::process::Command::new("git");
                git.args(["clone", "--quiet", "--depth", "1"]);
                if let Some(reference) = reference {
                    git.args(["--branch", reference]);
                }
                git.arg(format!("https://github.com/{owner}/{repo}.git"))
                    .arg(&tree.path)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                let output = match tokio::time::timeout(timeout, git.output()).await {
                    Err(_) => return Err(failed(FetchFailure::TimedOut)),
                    Ok(Err(err)) => {
                        warn!(error = %err, "cannot run git for a plugin fetch");
                        return Err(failed(FetchFailure::Upstream));
                    }
                    Ok(Ok(output)) => output,
                };
                if !output.status.success() {
                    let stderr = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
                    let not_found =
                        stderr.contains("not found") || stderr.contains("could not find");
                    warn!(status = %output.status, "plugin clone failed");
                    return Err(failed(if not_found {
                        FetchFailure::Missing
                    } else {
                        FetchFailure::Upstream
                    }));
                }
                let _ = tokio::fs::remove_dir_all(tree.path.join(".git")).await;
                Ok(tree)
            }
        }
    }
}

/// A fetched plugin tree; a scratch copy is removed when dropped.
pub struct Tree {
    pub path: PathBuf,
    scratch: bool,
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.scratch
            && let Some(parent) = self.path.parent()
        {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_the_documented_errors() {
        assert_eq!(
            Source::parse("demo", false).unwrap(),
            Source::Local {
                name: "demo".into()
            }
        );
        assert_eq!(
            Source::parse("github://acme/tools#v1.2.0", false)
                .unwrap()
                .canonical(),
            "github://acme/tools#v1.2.0"
        );
        assert_eq!(
            Source::parse("github://acme/tools", false),
            Err(PluginError::Unpinned {
                source: "github://acme/tools".to_owned()
            })
        );
        assert!(Source::parse("github://acme/tools", true).is_ok());
        assert_eq!(
            Source::parse("s3://bucket/x", false),
            Err(PluginError::UnknownScheme)
        );
        for bad in [
            "local://",
            "github://acme",
            "github://../x#v1",
            "github://a/b#--upload-pack=x",
        ] {
            assert_eq!(
                Source::parse(bad, true),
                Err(PluginError::InvalidSource),
                "{bad}"
            );
        }
        for bad in ["local://../etc", "local://Demo", "local://a/b"] {
            assert_eq!(
                Source::parse(bad, true),
                Err(PluginError::InvalidName),
                "{bad}"
            );
        }
    }

    #[test]
    fn requested_names_are_their_own_basename() {
        for good in ["demo", "my-plugin.v2"] {
            assert!(valid_requested_name(good));
        }
        for bad in ["", "a/b", "a\\b", "..", "a..b", "."] {
            assert!(!valid_requested_name(bad), "{bad}");
        }
    }
}
