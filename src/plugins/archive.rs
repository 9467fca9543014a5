//! Plugin trees on disk: the catalogue entry of one directory (its `plugin.yaml`) and the
//! gzip-compressed tar an agent unpacks. Blocking filesystem code only (run it off the async
//! threads); it never follows a symlink and never writes outside memory.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use flate2::{Compression, write::GzEncoder};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What `plugin.yaml` may declare; anything missing is empty (strings) or absent (lists).
#[derive(Debug, Default, Deserialize)]
pub struct Manifest {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub author: Option<String>,
    pub tags: Option<Vec<String>>,
    pub skills: Option<Vec<String>>,
    pub runtimes: Option<Vec<String>>,
}

/// Every plugin directory under `root`, sorted by name, with its manifest. An unreadable root
/// is an empty catalogue; an unreadable or malformed manifest falls back to the defaults.
pub fn catalogue(root: &Path) -> Vec<(String, Manifest)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut plugins: Vec<(String, Manifest)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .map(|name| {
            let manifest = fs::read_to_string(root.join(&name).join("plugin.yaml"))
                .ok()
                .and_then(|text| serde_yaml_ng::from_str(&text).ok())
                .unwrap_or_default();
            (name, manifest)
        })
        .collect();
    plugins.sort_by(|a, b| a.0.cmp(&b.0));
    plugins
}

/// A directory that exists and is not a symlink.
pub fn is_plain_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())
}

#[derive(Debug)]
pub enum PackError {
    /// The tree holds more file bytes than allowed.
    TooLarge,
    Io(io::Error),
}

impl From<io::Error> for PackError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

/// A packed plugin: the archive bytes and their hex SHA-256.
pub struct Archive {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

struct Entry {
    /// Relative to the plugin root, `/`-separated.
    relative: PathBuf,
    absolute: PathBuf,
    directory: bool,
    executable: bool,
}

/// Packs `root` as the SDK expects: names relative to the root (no `./`, no leading
/// directory), directories and regular files only (symlinks and special files are skipped),
/// modes 0644/0755, and file bytes exactly as on disk. Entries are sorted and timestamps
/// zeroed, so the same tree always packs to the same bytes.
pub fn pack(root: &Path, max_bytes: u64) -> Result<Archive, PackError> {
    let mut entries = Vec::new();
    let mut total = 0u64;
    walk(root, Path::new(""), &mut entries, &mut total, max_bytes)?;
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.follow_symlinks(false);
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if entry.directory {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &entry.relative, io::empty())?;
        } else {
            let file = fs::File::open(&entry.absolute)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if entry.executable { 0o755 } else { 0o644 });
            header.set_size(file.metadata()?.len());
            tar.append_data(&mut header, &entry.relative, file)?;
        }
    }
    let mut gzip = tar.into_inner()?;
    gzip.flush()?;
    let bytes = gzip.finish()?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Archive { bytes, sha256 })
}

fn walk(
    root: &Path,
    relative: &Path,
    entries: &mut Vec<Entry>,
    total: &mut u64,
    max_bytes: u64,
) -> Result<(), PackError> {
    let mut children: Vec<fs::DirEntry> =
        fs::read_dir(root.join(relative))?.collect::<Result<_, _>>()?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        // `DirEntry::metadata` does not follow symlinks.
        let meta = child.metadata()?;
        let relative = relative.join(child.file_name());
        if meta.is_dir() {
            entries.push(Entry {
                absolute: root.join(&relative),
                relative: relative.clone(),
                directory: true,
                executable: true,
            });
            walk(root, &relative, entries, total, max_bytes)?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > max_bytes {
                return Err(PackError::TooLarge);
            }
            entries.push(Entry {
                absolute: root.join(&relative),
                relative,
                directory: false,
                executable: is_executable(&meta),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!("plugin-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(root.join("skills/x")).unwrap();
        fs::write(root.join("plugin.yaml"), "name: demo\ntags: [a, b]\n").unwrap();
        fs::write(root.join("skills/x/SKILL.md"), "# x\nbody\n").unwrap();
        root
    }

    #[test]
    fn packs_relative_names_deterministically_and_skips_symlinks() {
        let root = temp_tree();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", root.join("leak")).unwrap();
        let first = pack(&root, 1 << 20).unwrap();
        let second = pack(&root, 1 << 20).unwrap();
        assert_eq!(first.bytes, second.bytes);
        assert_eq!(first.sha256, second.sha256);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(first.bytes.as_slice()));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["plugin.yaml", "skills", "skills/x", "skills/x/SKILL.md"]
        );
        assert!(matches!(pack(&root, 10), Err(PackError::TooLarge)));
    }

    #[test]
    fn catalogue_reads_manifests_and_falls_back_to_the_directory_name() {
        let root = temp_tree();
        let parent = root
            .parent()
            .unwrap()
            .join(format!("catalogue-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(parent.join("zeta")).unwrap();
        fs::rename(&root, parent.join("alpha")).unwrap();
        fs::write(parent.join("zeta/plugin.yaml"), ": not yaml [").unwrap();
        let plugins = catalogue(&parent);
        let names: Vec<&str> = plugins.iter().map(|(dir, _)| dir.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(plugins[0].1.name.as_deref(), Some("demo"));
        assert_eq!(
            plugins[0].1.tags.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert!(plugins[1].1.name.is_none());
        assert!(catalogue(&parent.join("missing")).is_empty());
    }
}
