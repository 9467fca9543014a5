//! Schedules (docs/operations.md O1): the reference's routes and shapes, a due run fired once
//! through the A2A proxy (a NAT'd agent finds it in its mailbox) and recorded, "run now",
//! skipped runs, the health views, and exactly-once firing across replicas — two in-process ones,
//! and one replica killed mid-tick.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use molecule::{
    config::RuntimeArgs,
    store::entities::{activity_log, schedule, schedule_run},
};
use reqwest::{Method, StatusCode};
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, sea_query::Expr,
};
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, TestApp, eventually, spawn_app, spawn_on};

async fn create(app: &TestApp, id: &str, token: &str, body: Value) -> crate::helpers::Reply {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/schedules"),
        Some(token),
        Some(body),
    )
    .await
}

/// A schedule every minute that sends `prompt`; its id.
async fn every_minute(app: &TestApp, id: &str, prompt: &str) -> String {
    scheduled(app, id, "* * * * *", prompt).await
}

/// A schedule on `cron` that sends `prompt`; its id.
async fn scheduled(app: &TestApp, id: &str, cron: &str, prompt: &str) -> String {
    let reply = create(
        app,
        id,
        &app.admin_token.clone(),
        json!({"name": "routine", "cron_expr": cron, "prompt": prompt}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Makes these schedules due at `at`, as if their minute had come.
async fn due_at(app: &TestApp, ids: &[String], at: DateTime<Utc>) {
    schedule::Entity::update_many()
        .col_expr(schedule::Column::NextRunAt, Expr::value(at))
        .filter(schedule::Column::Id.is_in(ids.to_vec()))
        .exec(&app.db)
        .await
        .unwrap();
}

/// The schedule's runs once there are at least `count` finished ones, newest first.
async fn finished_runs(app: &TestApp, id: &str, schedule: &str, count: usize) -> Vec<Value> {
    eventually(15, || async {
        let reply = app
            .admin_get(&format!("/workspaces/{id}/schedules/{schedule}/history"))
            .await;
        let runs = reply.body.as_array()?.clone();
        let finished = runs.iter().filter(|run| run["status"] != "running").count();
        (finished >= count).then_some(runs)
    })
    .await
}

/// The `a2a_receive` rows in the workspace's mailbox, counted in the database.
async fn mailbox(app: &TestApp, id: &str) -> u64 {
    activity_log::Entity::find()
        .filter(activity_log::Column::WorkspaceId.eq(id))
        .filter(activity_log::Column::ActivityType.eq("a2a_receive"))
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn schedules_are_created_listed_updated_and_deleted_in_the_references_shapes() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("scheduled", None).await;
    let (_, stranger) = app.registered_agent("stranger", None).await;

    let created = create(
        &app,
        &id,
        &token,
        json!({"name": "standup", "cron_expr": "0 9 * * 1-5", "timezone": "Europe/Berlin",
               "prompt": "write the standup\r\nnotes"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["status"], "created");
    let schedule = created.body["id"].as_str().unwrap().to_owned();
    let next: DateTime<Utc> = created.body["next_run_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let local = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(
        (local.hour(), local.minute()),
        (9, 0),
        "09:00 Berlin: {next}"
    );

    let listed = app
        .get(&format!("/workspaces/{id}/schedules"), Some(&token))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let row = &listed.body[0];
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "workspace_id",
            "name",
            "cron_expr",
            "timezone",
            "prompt",
            "enabled",
            "last_run_at",
            "next_run_at",
            "run_count",
            "last_status",
            "last_error",
            "source",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(
        row["prompt"], "write the standup\nnotes",
        "carriage returns dropped"
    );
    assert_eq!(
        (
            row["enabled"].clone(),
            row["source"].clone(),
            row["run_count"].clone()
        ),
        (json!(true), json!("runtime"), json!(0))
    );

    // Bad input is refused with the reference's words and changes nothing.
    for (body, error) in [
        (
            json!({"cron_expr": "* * * * *"}),
            "cron_expr and prompt are required",
        ),
        (json!({"prompt": "x"}), "cron_expr and prompt are required"),
        (
            json!({"cron_expr": "* * * * *", "prompt": "  "}),
            "cron_expr and prompt are required",
        ),
        (
            json!({"cron_expr": "every day", "prompt": "x"}),
            "invalid request body",
        ),
        (
            json!({"cron_expr": "0 0 * * * *", "prompt": "x"}),
            "invalid request body",
        ),
        (
            json!({"cron_expr": "* * * * *", "prompt": "x", "timezone": "Mars/Olympus"}),
            "invalid timezone: Mars/Olympus",
        ),
    ] {
        let reply = create(&app, &id, &token, body.clone()).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::BAD_REQUEST, json!({"error": error})),
            "{body}"
        );
    }
    let other = create(
        &app,
        &id,
        &stranger,
        json!({"cron_expr": "* * * * *", "prompt": "x"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let listed = app
        .get(&format!("/workspaces/{id}/schedules"), Some(&token))
        .await;
    assert_eq!(
        listed.body.as_array().unwrap().len(),
        1,
        "nothing was created"
    );

    // A new cron or zone moves the next run; other fields change alone.
    let path = format!("/workspaces/{id}/schedules/{schedule}");
    let updated = app
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"cron_expr": "30 6 * * *", "timezone": "UTC", "enabled": false})),
        )
        .await;
    assert_eq!(
        (updated.status, updated.body),
        (StatusCode::OK, json!({"status": "updated"}))
    );
    let row = app
        .get(&format!("/workspaces/{id}/schedules"), Some(&token))
        .await
        .body[0]
        .clone();
    assert_eq!(
        (row["cron_expr"].clone(), row["enabled"].clone()),
        (json!("30 6 * * *"), json!(false))
    );
    let next: DateTime<Utc> = row["next_run_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((next.hour(), next.minute()), (6, 30));
    let refused = app
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"timezone": "Nowhere/Land"})),
        )
        .await;
    assert_eq!(
        refused.body,
        json!({"error": "invalid timezone: Nowhere/Land"})
    );
    let missing = format!("/workspaces/{id}/schedules/{}", uuid::Uuid::new_v4());
    let gone = app
        .call(
            Method::PATCH,
            &missing,
            Some(&token),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (gone.status, gone.body),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "schedule not found"})
        )
    );
    // Another workspace's schedule is not found through this one.
    let (elsewhere, elsewhere_token) = app.registered_agent("elsewhere", None).await;
    let theirs = every_minute(&app, &elsewhere, "theirs").await;
    let crossed = app
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}/schedules/{theirs}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(crossed.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(
            &format!("/workspaces/{elsewhere}/schedules"),
            Some(&elsewhere_token)
        )
        .await
        .body
        .as_array()
        .unwrap()
        .len(),
        1
    );
    let deleted = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(
        (deleted.status, deleted.body),
        (StatusCode::OK, json!({"status": "deleted"}))
    );
    let listed = app
        .get(&format!("/workspaces/{id}/schedules"), Some(&token))
        .await;
    assert_eq!(listed.body, json!([]));
}

#[tokio::test]
async fn a_due_schedule_fires_once_into_the_mailbox_and_is_recorded() {
    let app = spawn_app().await;
    let (id, _) = app.registered_agent("behind-nat", None).await;
    let schedule = every_minute(&app, &id, "summarise the night").await;
    // Each slot is judged by its due time, so the clock's own minutes, which may come while
    // the test runs, add runs of their own without confusing it.
    // Microseconds, as every backend stores them.
    let first = molecule::store::now() - chrono::TimeDelta::seconds(1);
    due_at(&app, std::slice::from_ref(&schedule), first).await;
    let runs = finished_runs(&app, &id, &schedule, 1).await;
    let run = runs
        .iter()
        .find(|run| {
            run["due_at"]
                .as_str()
                .and_then(|at| at.parse::<DateTime<Utc>>().ok())
                == Some(first)
        })
        .expect("the slot's run");
    assert_eq!(
        (run["status"].clone(), run["trigger"].clone()),
        (json!("mailbox"), json!("schedule"))
    );
    assert_eq!(run["request"]["prompt"], "summarise the night");
    assert!(run["duration_ms"].is_number());
    let received = crate::a2a::received(&app, &id, 1).await;
    let text = &received[0]["request_body"]["params"]["message"]["parts"][0]["text"];
    assert_eq!(text, "summarise the night");

    let row = app
        .admin_get(&format!("/workspaces/{id}/schedules"))
        .await
        .body[0]
        .clone();
    assert_eq!(row["last_status"], "mailbox");
    assert!(row["run_count"].as_i64().unwrap() >= 1);
    let next: DateTime<Utc> = row["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(
        next > Utc::now()
            && next < Utc::now() + chrono::TimeDelta::minutes(2)
            && next.second() == 0,
        "a coming minute: {next}"
    );
    assert!(
        app.event_types(&id)
            .await
            .contains(&"CRON_EXECUTED".to_owned())
    );

    // Another slot fires once more, and each slot once.
    let second = molecule::store::now() - chrono::TimeDelta::seconds(1);
    due_at(&app, std::slice::from_ref(&schedule), second).await;
    finished_runs(&app, &id, &schedule, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for slot in [first, second] {
        assert_eq!(
            slot_counts(&app, std::slice::from_ref(&schedule), slot).await,
            [1]
        );
    }
    let runs = finished_runs(&app, &id, &schedule, 2).await;
    assert_eq!(
        mailbox(&app, &id).await,
        runs.len() as u64,
        "every run sent once: {runs:?}"
    );
}

#[tokio::test]
async fn run_now_fires_and_a_paused_workspace_is_skipped_with_the_reason() {
    let app = spawn_app().await;
    let (id, token) = app.registered_agent("worker", None).await;
    let schedule = scheduled(&app, &id, "0 0 1 1 *", "now, please").await;
    let fired = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/schedules/{schedule}/run"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(fired.status, StatusCode::OK, "{}", fired.text);
    assert_eq!(
        (
            fired.body["status"].clone(),
            fired.body["workspace_id"].clone(),
            fired.body["prompt"].clone()
        ),
        (json!("fired"), json!(id), json!("now, please"))
    );
    let runs = finished_runs(&app, &id, &schedule, 1).await;
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["id"], fired.body["run_id"]);
    assert_eq!(mailbox(&app, &id).await, 1);

    let paused = app
        .admin(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    assert!(paused.status.is_success(), "{}", paused.text);
    due_at(
        &app,
        std::slice::from_ref(&schedule),
        Utc::now() - chrono::TimeDelta::seconds(1),
    )
    .await;
    let runs = finished_runs(&app, &id, &schedule, 2).await;
    assert_eq!(
        (runs[0]["status"].clone(), runs[0]["error_detail"].clone()),
        (json!("skipped"), json!("workspace paused"))
    );
    assert_eq!(
        mailbox(&app, &id).await,
        1,
        "nothing sent to a paused workspace"
    );
    assert!(
        app.event_types(&id)
            .await
            .contains(&"CRON_SKIPPED".to_owned())
    );
}

#[tokio::test]
async fn peers_read_schedule_health_without_prompts_and_operators_see_every_schedule() {
    let app = spawn_app().await;
    let (lead, lead_token) = app.registered_agent("lead", None).await;
    let (worker, worker_token) = app.registered_agent("worker", Some(&lead)).await;
    let (other_root, _) = app.registered_agent("other-root", None).await;
    let (stranger, stranger_token) = app.registered_agent("stranger", Some(&other_root)).await;
    every_minute(&app, &worker, "secret plans").await;

    let as_peer = |caller: &str, token: &str| {
        app.http
            .get(format!("{}/workspaces/{worker}/schedules/health", app.rest))
            .bearer_auth(token)
            .header("x-workspace-id", caller)
    };
    let parent = app.raw(as_peer(&lead, &lead_token)).await;
    assert_eq!(parent.status, StatusCode::OK, "{}", parent.text);
    let entry = parent.body[0].as_object().unwrap();
    assert!(!parent.text.contains("secret plans") && !entry.contains_key("cron_expr"));
    assert_eq!(entry["last_status"], "");
    let own = app
        .get(
            &format!("/workspaces/{worker}/schedules/health"),
            Some(&worker_token),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let denied = app.raw(as_peer(&stranger, &stranger_token)).await;
    assert_eq!(
        (denied.status, denied.body),
        (StatusCode::FORBIDDEN, json!({"error": "access denied"}))
    );
    let forged = app.raw(as_peer(&lead, &stranger_token)).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    let admin = app.admin_get("/admin/schedules/health").await;
    assert_eq!(admin.status, StatusCode::OK);
    let row = admin
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["workspace_id"] == worker.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (
            row["status"].clone(),
            row["workspace_name"].clone(),
            row["stale_threshold_seconds"].clone()
        ),
        (json!("never_run"), json!("worker"), json!(120))
    );
    assert_eq!(
        app.get("/admin/schedules/health", Some(&worker_token))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// Registered mailbox agents, and `per_agent` schedules each; the schedules' ids.
async fn fleet(app: &TestApp, agents: usize, per_agent: usize) -> (Vec<String>, Vec<String>) {
    let mut workspaces = Vec::new();
    let mut schedules = Vec::new();
    for agent in 0..agents {
        let (id, _) = app.registered_agent(&format!("agent-{agent}"), None).await;
        for n in 0..per_agent {
            // New Year's only: no slot of the clock's own comes while the test runs.
            let prompt = format!("task {agent}.{n}");
            schedules.push(scheduled(app, &id, "0 0 1 1 *", &prompt).await);
        }
        workspaces.push(id);
    }
    (workspaces, schedules)
}

/// Each schedule's runs for the slot due at `due`, and the messages each workspace received.
async fn slot_counts(app: &TestApp, schedules: &[String], due: DateTime<Utc>) -> Vec<u64> {
    let mut counts = Vec::new();
    for id in schedules {
        let runs = schedule_run::Entity::find()
            .filter(schedule_run::Column::ScheduleId.eq(id.clone()))
            .filter(schedule_run::Column::DueAt.eq(due))
            .count(&app.db)
            .await
            .unwrap();
        counts.push(runs);
    }
    counts
}

/// The number of runs still `running`.
async fn still_running(app: &TestApp) -> u64 {
    schedule_run::Entity::find()
        .filter(schedule_run::Column::Status.eq("running"))
        .count(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_replicas_fire_every_run_due_in_the_same_second_exactly_once() {
    let backend = Backend::fresh().await.with_redis();
    let first = spawn_on(backend.clone(), Options::default()).await;
    let second = spawn_on(backend, Options::default()).await;
    let (workspaces, schedules) = fleet(&first, 20, 10).await;
    let due = (Utc::now() + chrono::TimeDelta::seconds(2))
        .with_nanosecond(0)
        .unwrap();
    due_at(&first, &schedules, due).await;

    eventually(30, || async {
        let counts = slot_counts(&first, &schedules, due).await;
        (counts.iter().all(|runs| *runs == 1) && still_running(&first).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = slot_counts(&first, &schedules, due).await;
    assert!(counts.iter().all(|runs| *runs == 1), "{counts:?}");
    let mut delivered = 0;
    for id in &workspaces {
        delivered += mailbox(&first, id).await;
    }
    assert_eq!(delivered, 200, "every run sent once");
    let statuses: Vec<String> = schedule_run::Entity::find()
        .select_only()
        .column(schedule_run::Column::Status)
        .into_tuple()
        .all(&second.db)
        .await
        .unwrap();
    assert_eq!(statuses.len(), 200);
    assert!(
        statuses.iter().all(|status| status == "mailbox"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_replica_killed_mid_tick_loses_no_run_and_doubles_none() {
    let backend = Backend::fresh().await.with_redis();
    let fire_timeout = Duration::from_secs(1);
    let options = Options {
        runtime: RuntimeArgs {
            schedule_fire_timeout: fire_timeout,
            ..RuntimeArgs::default()
        },
        ..Options::default()
    };
    let survivor = spawn_on(backend.clone(), options).await;
    let (replica_backend, token) = (backend.clone(), survivor.admin_token.clone());
    let mut doomed = tokio::task::spawn_blocking(move || {
        crate::cli::replica_process(
            &replica_backend,
            &token,
            &[("MOLECULE_SCHEDULE_FIRE_TIMEOUT", "1s")],
        )
    })
    .await
    .unwrap();
    let (workspaces, schedules) = fleet(&survivor, 20, 10).await;
    let due = (Utc::now() + chrono::TimeDelta::seconds(3))
        .with_nanosecond(0)
        .unwrap();
    due_at(&survivor, &schedules, due).await;
    // The moment the slot comes, the other replica dies without a word.
    let wait = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(15)).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Every slot has exactly one run, finished one way or the other (runs the killed replica
    // had claimed are recorded as failed once they are overdue).
    eventually(45, || async {
        let counts = slot_counts(&survivor, &schedules, due).await;
        (counts.iter().all(|runs| *runs == 1) && still_running(&survivor).await == 0).then_some(())
    })
    .await;
    let runs: Vec<(String, String)> = schedule_run::Entity::find()
        .select_only()
        .column(schedule_run::Column::Status)
        .column(schedule_run::Column::ErrorDetail)
        .into_tuple()
        .all(&survivor.db)
        .await
        .unwrap();
    assert_eq!(runs.len(), 200);
    let delivered_runs = runs
        .iter()
        .filter(|(status, _)| status == "mailbox")
        .count() as u64;
    let interrupted = runs
        .iter()
        .filter(|(status, detail)| status == "error" && detail.starts_with("interrupted"))
        .count();
    assert_eq!(delivered_runs as usize + interrupted, 200, "{runs:?}");
    let mut delivered = 0;
    for id in &workspaces {
        let received = mailbox(&survivor, id).await;
        assert!(received <= 10, "a run doubled: {received}");
        delivered += received;
    }
    assert!(
        delivered >= delivered_runs,
        "{delivered} messages, {delivered_runs} runs delivered"
    );
    assert!(delivered <= 200);
}

#[tokio::test]
async fn operators_see_each_background_loop_passing() {
    let app = spawn_app().await;
    let (_, token) = app.registered_agent("agent", None).await;
    let liveness = eventually(10, || async {
        let reply = app.admin_get("/admin/liveness").await;
        reply.body["subsystems"]["scheduler"]
            .is_object()
            .then_some(reply.body)
    })
    .await;
    let scheduler = &liveness["subsystems"]["scheduler"];
    assert_eq!(scheduler["stalled"], false);
    assert!(
        scheduler["seconds_ago"].as_u64().unwrap() <= 2,
        "{scheduler}"
    );
    assert!(scheduler["last_tick_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        liveness["subsystems"]["runtime_expiry_sweep"].is_object(),
        "{liveness}"
    );
    let refused = app.get("/admin/liveness", Some(&token)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}
