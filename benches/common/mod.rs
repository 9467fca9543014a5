//! What the load generators share: a fresh Postgres database, the release server started
//! against it, latency percentiles and medians. Each bench compiles this module on its own.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection};

// The same allocator as the server, so a generator takes no more of the shared cores than it
// must (the baselines are lean C: redis-benchmark, nginx).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which cores the server and the load generator run on (`taskset -c` lists such as `0-3`), so on
/// a bigger machine the two can be measured without competing. Unset: wherever the OS puts them.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct Cpus {
    /// Cores for the server (and the server-side baseline: nginx).
    #[arg(long)]
    pub(crate) server_cpus: Option<String>,
    /// Cores for this load generator (and the client-side baseline: redis-benchmark).
    #[arg(long)]
    pub(crate) client_cpus: Option<String>,
}

impl Cpus {
    /// Pins this process, every thread of it and those it starts later, to the client cores.
    pub(crate) fn pin_client(&self) {
        if let Some(list) = &self.client_cpus {
            let status = Command::new("taskset")
                .args(["-a", "-p", "-c", list, &std::process::id().to_string()])
                .stdout(Stdio::null())
                .status()
                .expect("taskset is installed (util-linux)");
            assert!(status.success(), "taskset -c {list} refused");
        }
    }

    /// `program` on the server cores.
    pub(crate) fn server_command(&self, program: &str) -> Command {
        pinned(self.server_cpus.as_deref(), program)
    }

    /// `program` on the client cores.
    pub(crate) fn client_command(&self, program: &str) -> Command {
        pinned(self.client_cpus.as_deref(), program)
    }

    /// The placement, as a report line shows it.
    pub(crate) fn describe(&self) -> String {
        format!(
            "server cpus {}, client cpus {}",
            self.server_cpus.as_deref().unwrap_or("any"),
            self.client_cpus.as_deref().unwrap_or("any")
        )
    }
}

fn pinned(cpus: Option<&str>, program: &str) -> Command {
    match cpus {
        Some(list) => {
            // taskset execs the program: the child's pid is the program's own.
            let mut command = Command::new("taskset");
            command.args(["-c", list, program]);
            command
        }
        None => Command::new(program),
    }
}

/// CPU ticks (user + system) of every process `matches` picks by pid and `comm`, by pid.
pub(crate) fn cpu_ticks(matches: impl Fn(u32, &str) -> bool) -> HashMap<u32, u64> {
    let mut ticks = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid … utime stime …": fields after the closing parenthesis.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, comm)| comm);
        if !matches(pid, comm) {
            continue;
        }
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are the 14th and 15th fields; `tail` starts at the 3rd.
        ticks.insert(pid, field(11) + field(12));
    }
    ticks
}

/// CPU seconds a group of processes used between two [`cpu_ticks`] readings; a process that
/// appeared in between counts from zero.
pub(crate) fn cpu_seconds_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = after
        .iter()
        .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / hz
}

/// A process's resident memory in KiB, from `/proc/<pid>/status` (0 once it is gone).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What every load generator runs against.
#[derive(clap::Args, Debug)]
pub(crate) struct Services {
    /// The `molecule` binary to start.
    #[arg(long, default_value = "target/release/molecule")]
    pub(crate) server: String,
    /// The embedded default instead: SQLite in the server's data dir, in-process liveness and
    /// events (no Postgres or Redis for the server).
    #[arg(long)]
    pub(crate) embedded: bool,
    /// A Postgres URL whose server can host a fresh benchmark database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub(crate) postgres: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub(crate) redis: String,
    #[command(flatten)]
    pub(crate) cpus: Cpus,
}

impl Services {
    /// The server at `port` on a fresh Postgres database and Redis, or on the embedded default;
    /// with the database (to drop at the end; none when embedded) and the admin token.
    pub(crate) async fn start(&self, port: u16) -> (Option<Database>, Server, String) {
        self.start_with(port, &[]).await
    }

    /// [`Services::start`] with extra environment for the server, such as a shorter TTL.
    pub(crate) async fn start_with(
        &self,
        port: u16,
        env: &[(&str, &str)],
    ) -> (Option<Database>, Server, String) {
        self.cpus.pin_client();
        let admin_token = molecule::auth::MintedToken::generate().plaintext;
        let (database, url, redis) = if self.embedded {
            (None, Server::embedded_database_url(), None)
        } else {
            let database = Database::create(&self.postgres, "molecule_bench").await;
            let url = database.url.clone();
            (Some(database), url, Some(self.redis.as_str()))
        };
        let server = Server::start(
            &self.cpus,
            &self.server,
            port,
            (&url, redis),
            &admin_token,
            env,
        )
        .await;
        (database, server, admin_token)
    }

    /// Which backends the server runs on, for the report.
    pub(crate) fn describe(&self) -> String {
        let backends = if self.embedded {
            "embedded (SQLite, in-process liveness and events)"
        } else {
            "Postgres + Redis"
        };
        format!("{backends}; {}", self.cpus.describe())
    }
}

/// Latencies in microseconds.
pub(crate) struct Latencies(pub(crate) Vec<u32>);

impl Latencies {
    /// The `p` quantile in milliseconds.
    pub(crate) fn percentile(&mut self, p: f64) -> f64 {
        self.0.sort_unstable();
        let index = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.0.get(index).copied().unwrap_or(0)) / 1000.0
    }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A database of its own next to `base_url`'s, dropped by [`Database::drop`].
pub(crate) struct Database {
    admin: DatabaseConnection,
    name: String,
    pub(crate) url: String,
}

impl Database {
    pub(crate) async fn create(base_url: &str, prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = molecule::store::connect_url(base_url)
            .await
            .expect("postgres reachable");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        let url = format!("{}/{name}", base_url.rsplit_once('/').unwrap().0);
        Self { admin, name, url }
    }

    pub(crate) async fn drop(self) {
        let _ = self
            .admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// A `molecule serve` child process; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// The Redis it used and its key namespace there, emptied when the server is dropped (the
    /// liveness deadlines of agents still beating at the end would otherwise stay).
    redis: Option<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((url, namespace)) = &self.redis {
            let _ = Command::new("redis-cli")
                .args(["-u", url, "--no-raw", "EVAL"])
                .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
                .args(["0", &format!("{namespace}*")])
                .stdout(Stdio::null())
                .status();
        }
    }
}

impl Server {
    /// A data directory of its own, for a server's key files (and an embedded database).
    pub(crate) fn data_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("molecule-bench-{}", uuid::Uuid::new_v4().simple()))
    }

    /// A SQLite file of its own, as the embedded default keeps it.
    pub(crate) fn embedded_database_url() -> String {
        let dir = Self::data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}?mode=rwc", dir.join("bench.db").display())
    }

    /// Starts the release binary on `database_url` (Postgres, or a SQLite file for the embedded
    /// default) and Redis when given (in-process liveness and events otherwise), and waits for
    /// `/health`.
    pub(crate) async fn start(
        cpus: &Cpus,
        binary: &str,
        port: u16,
        (database_url, redis_url): (&str, Option<&str>),
        admin_token: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let data_dir = Self::data_dir();
        let namespace = format!("bench-{}:", uuid::Uuid::new_v4().simple());
        let mut command = cpus.server_command(binary);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("MOLECULE_REDIS_NAMESPACE", &namespace);
        if let Some(redis_url) = redis_url {
            command.env("REDIS_URL", redis_url);
        }
        let mut child = command
            .env("ADMIN_TOKEN", admin_token)
            .env("MOLECULE_DATA_DIR", &data_dir)
            .env("RATE_LIMIT", "1000000000")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("the molecule binary starts (run the bench through its script)");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{base}/health")).await.is_ok() {
                let redis = redis_url.map(|url| (url.to_owned(), namespace));
                return Self { child, base, redis };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not come up");
    }

    /// Creates an external workspace and registers it at `url`; returns `(id, token)`.
    pub(crate) async fn register_agent(
        &self,
        http: &reqwest::Client,
        admin: &str,
        name: &str,
        parent: Option<&str>,
        url: &str,
    ) -> (String, String) {
        let base = &self.base;
        let reply: serde_json::Value = http
            .post(format!("{base}/workspaces"))
            .bearer_auth(admin)
            .json(&serde_json::json!({"name": name, "external": true, "parent_id": parent}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = reply["id"].as_str().unwrap().to_owned();
        let registered: serde_json::Value = http
            .post(format!("{base}/registry/register"))
            .json(&serde_json::json!({"id": id, "url": url, "agent_card": {"name": name}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (id, registered["auth_token"].as_str().unwrap().to_owned())
    }
}
