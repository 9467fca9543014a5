//! Memories load generator (docs/runtime.md §1). Seeds 100,000 memories across 1,000 workspaces
//! (100 teams of a root and nine children) through the API, then measures a TEAM search with a
//! two-word query, on the embedded default (SQLite) and on Postgres. Every figure is a ratio
//! against the same work done by a direct call to the same database: commits against a plain
//! INSERT of the same row, searches against the very statement the service runs.
//!
//! Run it with `bench/memories.sh` (which builds the release binary first).

use std::time::Instant;

use clap::Parser;
use futures_util::{StreamExt, stream};
use molecule::{
    domain::MemoryScope,
    runtime::memories::{
        self,
        search::{self, Query, Reader},
    },
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;

mod common;

use common::{Database, Latencies, Server};

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    services: common::Services,
    /// Teams of one root and `team_size - 1` children.
    #[arg(long, default_value_t = 100)]
    teams: usize,
    #[arg(long, default_value_t = 10)]
    team_size: usize,
    /// Memories in all, spread evenly over the workspaces.
    #[arg(long, default_value_t = 100_000)]
    memories: usize,
    /// Concurrent clients while seeding.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Searches timed (one at a time, for latency).
    #[arg(long, default_value_t = 2_000)]
    searches: usize,
    /// The two-word query.
    #[arg(long, default_value = "deployment pipeline")]
    query: String,
    /// `sqlite`, `postgres`, or both.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    #[arg(long, default_value_t = 18133)]
    port: u16,
    // `cargo bench` passes `--bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Words memories are made of: a few a team writes about, many rare ones, drawn with a skew so
/// common words match thousands of rows and rare ones a handful.
fn vocabulary() -> Vec<String> {
    let common = [
        "deployment",
        "pipeline",
        "release",
        "database",
        "migration",
        "customer",
        "incident",
        "review",
        "latency",
        "billing",
        "schema",
        "rollback",
        "cache",
        "queue",
        "token",
        "agent",
        "deadline",
        "design",
        "budget",
        "backlog",
    ];
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fi",
    ];
    let mut words: Vec<String> = common.iter().map(|word| (*word).to_owned()).collect();
    for a in syllables {
        for b in syllables {
            for c in syllables {
                words.push(format!("{a}{b}{c}"));
            }
        }
    }
    words
}

/// A deterministic generator (xorshift), so both backends get the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An index below `n`, skewed toward 0.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((u * u * u) * n as f64) as usize
    }
}

fn sentence(rng: &mut Rng, words: &[String]) -> String {
    (0..12)
        .map(|_| words[rng.skewed(words.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Workspace {
    id: String,
    parent: Option<String>,
    token: String,
}

async fn create_workspaces(
    server: &Server,
    http: &reqwest::Client,
    admin: &str,
    args: &Args,
) -> Vec<Workspace> {
    let roots: Vec<(String, String)> = stream::iter(0..args.teams)
        .map(|team| async move {
            let name = format!("lead-{team}");
            server
                .register_agent(http, admin, &name, None, "remote://no-inbound")
                .await
        })
        .buffered(args.clients)
        .collect()
        .await;
    let mut workspaces: Vec<Workspace> = Vec::new();
    let children: Vec<(String, String, String)> =
        stream::iter(roots.iter().enumerate().flat_map(|(team, (root, _))| {
            (1..args.team_size).map(move |member| (team, member, root.clone()))
        }))
        .map(|(team, member, root)| async move {
            let (id, token) = server
                .register_agent(
                    http,
                    admin,
                    &format!("member-{team}-{member}"),
                    Some(&root),
                    "remote://no-inbound",
                )
                .await;
            (id, token, root)
        })
        .buffered(args.clients)
        .collect()
        .await;
    for (id, token) in roots {
        workspaces.push(Workspace {
            id,
            parent: None,
            token,
        });
    }
    for (id, token, root) in children {
        workspaces.push(Workspace {
            id,
            parent: Some(root),
            token,
        });
    }
    workspaces
}

/// Commits every memory through the API; the commit latencies and the rate.
async fn seed(
    server: &Server,
    http: &reqwest::Client,
    workspaces: &[Workspace],
    args: &Args,
) -> (Latencies, f64) {
    let words = vocabulary();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let jobs: Vec<(usize, String, &'static str)> = (0..args.memories)
        .map(|n| {
            let scope = match n % 10 {
                0..=3 => "TEAM",
                _ => "LOCAL",
            };
            (n % workspaces.len(), sentence(&mut rng, &words), scope)
        })
        .collect();
    let started = Instant::now();
    let latencies: Vec<u32> = stream::iter(jobs)
        .map(|(owner, content, scope)| {
            let workspace = &workspaces[owner];
            let url = format!("{}/workspaces/{}/memories", server.base, workspace.id);
            async move {
                let sent = Instant::now();
                let reply = http
                    .post(url)
                    .bearer_auth(&workspace.token)
                    .json(&json!({"content": content, "scope": scope}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 201, "commit refused");
                sent.elapsed().as_micros() as u32
            }
        })
        .buffer_unordered(args.clients)
        .collect()
        .await;
    let rate = args.memories as f64 / started.elapsed().as_secs_f64();
    (Latencies(latencies), rate)
}

/// The same rows' INSERT, sent straight to the database with the same concurrency.
async fn direct_inserts(
    db: &DatabaseConnection,
    workspaces: &[Workspace],
    args: &Args,
) -> Latencies {
    let words = vocabulary();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let backend = db.get_database_backend();
    let placeholders = match backend {
        sea_orm::DbBackend::Postgres => "$1, $2, $3, 'LOCAL', 'baseline', $4",
        _ => "?, ?, ?, 'LOCAL', 'baseline', ?",
    };
    let sql = format!(
        "INSERT INTO agent_memories (id, workspace_id, content, scope, namespace, created_at) VALUES ({placeholders})"
    );
    let rows: Vec<(String, String)> = (0..args.searches.min(args.memories))
        .map(|n| {
            (
                workspaces[n % workspaces.len()].id.clone(),
                sentence(&mut rng, &words),
            )
        })
        .collect();
    let latencies = stream::iter(rows)
        .map(|(workspace, content)| {
            let statement = Statement::from_sql_and_values(
                backend,
                &sql,
                [
                    uuid::Uuid::new_v4().to_string().into(),
                    workspace.into(),
                    content.into(),
                    chrono::Utc::now().into(),
                ],
            );
            async move {
                let sent = Instant::now();
                db.execute_raw(statement).await.unwrap();
                sent.elapsed().as_micros() as u32
            }
        })
        .buffer_unordered(args.clients)
        .collect()
        .await;
    Latencies(latencies)
}

/// Runs `search` once per timed search, one at a time, cycling through the workspaces: the
/// latencies, and the rows found in all.
async fn timed_searches<'a, F, Fut>(
    workspaces: &'a [Workspace],
    count: usize,
    mut search: F,
) -> (Latencies, usize)
where
    F: FnMut(&'a Workspace) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut latencies = Vec::with_capacity(count);
    let mut matched = 0;
    for n in 0..count {
        let workspace = &workspaces[n * 7 % workspaces.len()];
        let sent = Instant::now();
        matched += search(workspace).await;
        latencies.push(sent.elapsed().as_micros() as u32);
    }
    (Latencies(latencies), matched)
}

/// A TEAM search through the API with the workspace's own token; the rows found.
async fn api_search(
    server: &Server,
    http: &reqwest::Client,
    workspace: &Workspace,
    query: &str,
) -> usize {
    let url = format!("{}/workspaces/{}/memories", server.base, workspace.id);
    let request = http
        .get(url)
        .query(&[("scope", "TEAM"), ("q", query)])
        .bearer_auth(&workspace.token);
    let reply: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    reply.as_array().map_or(0, Vec::len)
}

/// The statements the service runs for the same search (its team, then the search), sent
/// straight to the database.
async fn direct_search(db: &DatabaseConnection, workspace: &Workspace, query: &str) -> usize {
    let team = memories::team(db, &workspace.id, workspace.parent.as_deref())
        .await
        .unwrap();
    let reader = Reader {
        id: &workspace.id,
        team: &team,
    };
    let query = Query {
        scope: Some(MemoryScope::Team),
        text: query,
        namespace: None,
        limit: 50,
    };
    let statement = search::statement(db.get_database_backend(), &reader, &query).unwrap();
    db.query_all_raw(statement).await.unwrap().len()
}

async fn run(args: &Args, backend: &str) {
    let admin = molecule::auth::MintedToken::generate().plaintext;
    let (database, url) = match backend {
        "postgres" => {
            let database = Database::create(&args.services.postgres, "molecule_bench").await;
            let url = database.url.clone();
            (Some(database), url)
        }
        _ => (None, Server::embedded_database_url()),
    };
    let redis = (backend == "postgres").then_some(args.services.redis.as_str());
    let cpus = &args.services.cpus;
    let server = Server::start(
        cpus,
        &args.services.server,
        args.port,
        (&url, redis),
        &admin,
        &[],
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .unwrap();
    let workspaces = create_workspaces(&server, &http, &admin, args).await;
    let (mut commits, rate) = seed(&server, &http, &workspaces, args).await;
    let db = molecule::store::connect_url(&url)
        .await
        .expect("the database opens");
    let mut inserts = direct_inserts(&db, &workspaces, args).await;
    let query = args.query.as_str();
    let (mut api, api_rows) = timed_searches(&workspaces, args.searches, |workspace| {
        api_search(&server, &http, workspace, query)
    })
    .await;
    let (mut direct, direct_rows) = timed_searches(&workspaces, args.searches, |workspace| {
        direct_search(&db, workspace, query)
    })
    .await;
    assert_eq!(
        api_rows, direct_rows,
        "the API and the direct statement find the same rows"
    );

    println!(
        "\n== {backend}: {} memories, {} workspaces ==",
        args.memories,
        workspaces.len()
    );
    println!(
        "commit  ({} clients): {rate:.0}/s; p50 {:.2} ms, p99 {:.2} ms | direct INSERT p50 {:.2} ms, p99 {:.2} ms | p50 ratio {:.1}x",
        args.clients,
        commits.percentile(0.5),
        commits.percentile(0.99),
        inserts.percentile(0.5),
        inserts.percentile(0.99),
        commits.percentile(0.5) / inserts.percentile(0.5).max(0.001),
    );
    println!(
        "TEAM search {:?} ({} searches, {:.1} rows each): p50 {:.2} ms, p99 {:.2} ms | direct statement p50 {:.2} ms, p99 {:.2} ms | p50 ratio {:.2}x",
        args.query,
        args.searches,
        api_rows as f64 / args.searches as f64,
        api.percentile(0.5),
        api.percentile(0.99),
        direct.percentile(0.5),
        direct.percentile(0.99),
        api.percentile(0.5) / direct.percentile(0.5).max(0.001),
    );
    drop(server);
    if let Some(database) = database {
        database.drop().await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    args.services.cpus.pin_client();
    println!("{}", args.services.cpus.describe());
    for backend in &args.backends {
        // `--embedded` keeps to the embedded default whatever `--backends` says.
        if args.services.embedded && backend != "sqlite" {
            continue;
        }
        run(&args, backend).await;
    }
}
