//! Scale-out on PostgreSQL: real `omniflow worker` processes share one
//! database (a database of its own per test, `store::pg`), and the queue's
//! guarantees hold while processes are killed, paused and cut off:
//!
//! - every queued run finishes exactly once (one `omniflow_run`
//!   notification per run: the terminal status is written once);
//! - a step that succeeded is never attempted again (no attempt row after
//!   its succeeded one, never two succeeded attempts);
//! - a paused worker whose lease was taken over writes nothing when it
//!   wakes (fencing by lease epoch);
//! - each fire time of a schedule yields one run, however many processes
//!   run the scheduler.
//!
//! Workers run with a 2 s lease so a dead or paused one is taken over
//! quickly. They share the tests' compiled-piece cache (one process
//! compiles each piece; the others wait for it and load it).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omniflow::store::{NewRun, Priority, Store};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::store::TestDb;
use crate::store::pg::postgres_db;
use crate::support::{cache_dir, guest_dir};

const BIN: &str = env!("CARGO_BIN_EXE_omniflow");

/// A running `omniflow worker`; killed (SIGKILL) when dropped.
struct Node {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Start `omniflow ARGS --db <db> --piece flaky.wasm` in `dir`, logging
    /// warnings to `<dir>/<name>.log`.
    fn spawn(dir: &Path, db: &TestDb, name: &str, args: &[&str]) -> Node {
        let log = dir.join(format!("{name}.log"));
        let stderr = File::create(&log).expect("creating the process's log");
        let child = Command::new(BIN)
            .args(args)
            .args(["--db", &db.url])
            .arg("--piece")
            .arg(guest_dir().join("flaky.wasm"))
            .env("OMNIFLOW_CACHE_DIR", cache_dir())
            .env("OMNIFLOW_LOG", "warn")
            .env_remove("OMNIFLOW_DATABASE_URL")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting omniflow {args:?}: {e}"));
        Node {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Start `omniflow serve --no-workers` (the API alone) on `db`,
    /// listening on `port` with the admin token `token`.
    fn api(dir: &Path, db: &TestDb, port: u16, token: &str) -> Node {
        let listen = format!("127.0.0.1:{port}");
        let args = [
            "serve",
            "--no-workers",
            "--admin-token",
            token,
            "--listen",
            &listen,
        ];
        Node::spawn(dir, db, "api", &args)
    }

    /// Start `omniflow worker` on `db` (2 s lease, the `flaky` test piece
    /// loaded), logging warnings to `<dir>/<name>.log`.
    fn worker(dir: &Path, db: &TestDb, name: &str, extra: &[&str]) -> Node {
        let mut args = vec!["worker", "--lease", "2s"];
        args.extend_from_slice(extra);
        Node::spawn(dir, db, name, &args)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("worker {} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {}\n{}", n.name, n.log()))
        .collect()
}

async fn connect(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.url)
        .await
        .expect("connecting to the test database")
}

fn transform(id: &str, needs: &[&str]) -> Value {
    json!({"id": id, "piece": "transform@^0.1", "action": "template", "needs": needs,
           "input": {"template": "n={{ vars.n }}"}})
}

fn slow(id: &str, needs: &[&str], sleep_ms: u64) -> Value {
    json!({"id": id, "piece": "flaky@^0.1", "action": "run", "needs": needs,
           "input": {"sleep_ms": sleep_ms, "value": "{{ vars.n }}"}})
}

/// Save workflow `name` with `steps` (and `extra` top-level fields).
async fn save(store: &Arc<dyn Store>, name: &str, steps: Vec<Value>, extra: Value) -> i64 {
    let mut definition = json!({"name": name, "vars": {"n": 0}, "steps": steps});
    if let (Some(d), Some(extra)) = (definition.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    store
        .save_workflow(name, &definition)
        .await
        .expect("saving a workflow")
        .version
}

fn run(name: &str, version: i64, n: usize, priority: Priority) -> NewRun {
    let mut run = NewRun::manual(name, version, json!({}));
    run.priority = priority;
    run.vars = json!({ "n": n });
    run
}

async fn queue(store: &Arc<dyn Store>, runs: Vec<NewRun>) -> usize {
    let total = runs.len();
    let mut runs = runs.into_iter().peekable();
    while runs.peek().is_some() {
        let batch: Vec<NewRun> = runs.by_ref().take(500).collect();
        store.create_runs(batch).await.expect("queueing runs");
    }
    total
}

/// `count` runs of a saved chain of three `flaky` steps sleeping `sleep_ms` each.
async fn three_slow_steps(store: &Arc<dyn Store>, sleep_ms: u64, count: usize) -> Vec<NewRun> {
    let steps = vec![
        slow("a", &[], sleep_ms),
        slow("b", &["a"], sleep_ms),
        slow("c", &["b"], sleep_ms),
    ];
    let version = save(store, "three", steps, json!({})).await;
    (0..count)
        .map(|n| run("three", version, n, Priority::Normal))
        .collect()
}

/// Counts the `omniflow_run` notifications (one per terminal status
/// written) per run, from before the runs are queued.
struct FinishCounter {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FinishCounter {
    async fn start(db: &TestDb) -> FinishCounter {
        let mut listener = sqlx::postgres::PgListener::connect(&db.url)
            .await
            .expect("LISTEN connection");
        listener.listen("omniflow_run").await.expect("LISTEN");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let sink = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok(n) = listener.recv().await {
                *sink
                    .lock()
                    .unwrap()
                    .entry(n.payload().to_owned())
                    .or_insert(0) += 1;
            }
        });
        FinishCounter { counts, task }
    }

    /// No run was reported finished twice, and (`complete`) every one of
    /// `total` was reported. (The notification follows the commit, so a
    /// process killed in between loses one: the chaos test checks only
    /// the first half.)
    async fn assert_each_once(self, total: usize, complete: bool) {
        // Notifications trail the commits a little.
        let deadline = Instant::now() + Duration::from_secs(10);
        while complete && self.counts.lock().unwrap().len() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.task.abort();
        let counts = self.counts.lock().unwrap();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).take(5).collect();
        assert!(twice.is_empty(), "runs finished more than once: {twice:?}");
        if complete {
            assert_eq!(counts.len(), total, "runs reported finished");
        }
    }
}

/// Wait until `total` runs are terminal, checking the `alive` nodes stay
/// up; returns the most worker processes seen executing runs at once.
async fn wait_finished(db: &TestDb, total: usize, within: Duration, alive: &mut [Node]) -> i64 {
    let mut conn = connect(db).await;
    let deadline = Instant::now() + within;
    let mut most_owners = 0;
    loop {
        let owners: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT lease_owner) FROM runs WHERE status = 'running'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("counting lease owners");
        most_owners = most_owners.max(owners);
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&mut conn)
        .await
        .expect("counting finished runs");
        if done as usize >= total {
            return most_owners;
        }
        for node in alive.iter_mut() {
            node.assert_alive();
        }
        assert!(
            Instant::now() < deadline,
            "{done}/{total} runs finished after {within:?}\n{}",
            logs(alive)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every run succeeded, every step succeeded once, and no step was
/// attempted again after it succeeded.
async fn assert_succeeded_once(db: &TestDb) {
    let mut conn = connect(db).await;
    let bad: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT id::text, status, error FROM runs WHERE status <> 'succeeded' LIMIT 5",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(bad.is_empty(), "runs that did not succeed: {bad:?}");
    let steps: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT run_id::text, step_id, status FROM step_runs WHERE status <> 'succeeded' LIMIT 5",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(steps.is_empty(), "steps that did not succeed: {steps:?}");
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT run_id::text, step_id, count(*) FROM attempts WHERE status = 'succeeded' \
         GROUP BY run_id, step_id HAVING count(*) > 1 LIMIT 5",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(twice.is_empty(), "steps that succeeded twice: {twice:?}");
    let again: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.run_id::text, a.step_id, a.attempt FROM attempts a JOIN attempts s \
         ON s.run_id = a.run_id AND s.step_id = a.step_id AND s.status = 'succeeded' \
         WHERE a.attempt > s.attempt LIMIT 5",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        again.is_empty(),
        "attempts after a step succeeded: {again:?}"
    );
}

/// 4 workers drain 2 000 queued runs of mixed priorities, some with three
/// steps, some parked on a `delay`: each finishes exactly once, no
/// succeeded step runs twice, and higher priorities start first. (Checked
/// to fail without `SKIP LOCKED`: concurrent claims then block on, and
/// re-take, the same rows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_drain_2000_runs_once_each_by_priority() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let store = db.open().await;
    let one = save(&store, "one", vec![transform("a", &[])], json!({})).await;
    let three = save(
        &store,
        "three",
        vec![
            transform("a", &[]),
            transform("b", &["a"]),
            transform("c", &["b"]),
        ],
        json!({}),
    )
    .await;
    let nap = save(
        &store,
        "nap",
        vec![
            json!({"id": "nap", "piece": "delay@^0.1", "action": "sleep", "input": {"duration": "1s"}}),
            transform("after", &["nap"]),
        ],
        json!({}),
    )
    .await;
    let priorities = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];
    let runs = (0..2000)
        .map(|n| {
            let priority = priorities[n % 4];
            match n {
                n if n % 10 == 0 => run("nap", nap, n, priority),
                n if n % 3 == 0 => run("three", three, n, priority),
                n => run("one", one, n, priority),
            }
        })
        .collect();
    let finished = FinishCounter::start(&db).await;
    let total = queue(&store, runs).await;

    let mut nodes: Vec<Node> = (0..4)
        .map(|i| Node::worker(dir.path(), &db, &format!("w{i}"), &["--workers", "8"]))
        .collect();
    let owners = wait_finished(&db, total, Duration::from_secs(300), &mut nodes).await;
    assert_succeeded_once(&db).await;
    finished.assert_each_once(total, true).await;
    assert!(
        owners >= 2,
        "at most {owners} worker(s) executed runs at once"
    );

    // Higher priorities first: every high or critical run (not parked)
    // started before the low ones, give or take concurrent claims.
    let mut conn = connect(&db).await;
    let starts: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT priority, extract(epoch FROM started_at)::float8 FROM runs \
         WHERE workflow_name <> 'nap'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let high: Vec<f64> = starts.iter().filter(|s| s.0 >= 2).map(|s| s.1).collect();
    let low: Vec<f64> = starts.iter().filter(|s| s.0 == 0).map(|s| s.1).collect();
    let last_high = high.iter().copied().fold(f64::MIN, f64::max);
    let first_low = low.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        last_high <= first_low + 1.0,
        "a low-priority run started {:.3}s before the last high-priority one",
        last_high - first_low
    );
}

/// A tiny deterministic generator for the chaos schedule (seeded, so a
/// failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `kill -9` of workers at seeded moments while 600 three-step runs are
/// drained: every run still finishes exactly once and no finished step is
/// re-run (its succeeded attempt is the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_run_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let store = db.open().await;
    let runs = three_slow_steps(&store, 20, 600).await;
    let finished = FinishCounter::start(&db).await;
    let total = queue(&store, runs).await;

    let mut rng = Lcg(7);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::worker(dir.path(), &db, &format!("w{i}"), &["--workers", "4"]))
        .collect();
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(300 + rng.next(500))).await;
        let victim = rng.next(nodes.len() as u64) as usize;
        nodes[victim].kill9();
        nodes[victim] = Node::worker(dir.path(), &db, &format!("r{round}"), &["--workers", "4"]);
    }
    wait_finished(&db, total, Duration::from_secs(300), &mut nodes).await;
    assert_succeeded_once(&db).await;
    finished.assert_each_once(total, false).await;
    // The kills did interrupt runs (claimed again after a lease ran out).
    let mut conn = connect(&db).await;
    let taken_over: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE lease_epoch > 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(taken_over > 0, "no run was interrupted by the kills");
}

/// Everything stored about a run, as text (to compare before and after).
async fn snapshot(conn: &mut PgConnection, run: &str) -> String {
    let parts: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT (SELECT row_to_json(r)::text FROM runs r WHERE id = $1::uuid) \
         UNION ALL SELECT (SELECT json_agg(s ORDER BY step_id)::text FROM step_runs s WHERE run_id = $1::uuid) \
         UNION ALL SELECT (SELECT json_agg(a ORDER BY step_id, attempt)::text FROM attempts a WHERE run_id = $1::uuid)",
    )
    .bind(run)
    .fetch_all(conn)
    .await
    .unwrap();
    parts.into_iter().flatten().collect::<Vec<_>>().join("\n")
}

/// A worker paused (SIGSTOP) mid-step past its lease is taken over; when
/// it wakes (SIGCONT) its writes are refused and the run's record stays
/// the new owner's. (Checked to fail with the epoch condition removed from
/// the step write: the stale worker's attempt then lands in `attempts`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_lost_its_lease_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let store = db.open().await;
    let version = save(
        &store,
        "slow",
        vec![slow("s1", &[], 3000), transform("s2", &["s1"])],
        json!({}),
    )
    .await;
    let created = store
        .create_run(run("slow", version, 1, Priority::Normal))
        .await
        .unwrap();
    let id = created.id.to_string();
    let mut conn = connect(&db).await;
    let mut a = Node::worker(dir.path(), &db, "a", &["--workers", "1"]);
    // Wait until A executes the slow step, then freeze it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if status == "running" {
            break;
        }
        a.assert_alive();
        assert!(
            Instant::now() < deadline,
            "A never claimed the run\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("STOP");
    let mut b = vec![Node::worker(dir.path(), &db, "b", &["--workers", "1"])];
    wait_finished(&db, 1, Duration::from_secs(60), &mut b).await;
    let before = snapshot(&mut conn, &id).await;
    assert!(before.contains("\"succeeded\""), "{before}");

    a.signal("CONT");
    // A wakes, finishes its sleep at once, and is refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log().contains("lease") {
        assert!(
            Instant::now() < deadline,
            "A never noticed it lost the lease:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.assert_alive();
    let after = snapshot(&mut conn, &id).await;
    assert_eq!(before, after, "the stale worker changed the run's record");
    let succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE run_id = $1::uuid AND step_id = 's1' AND status = 'succeeded'",
    )
    .bind(&id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(succeeded, 1, "{after}");
}

/// Every connection of the workers is terminated (`pg_terminate_backend`)
/// several times while they drain runs: they reconnect, and nothing is
/// lost or finished twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let store = db.open().await;
    let runs = three_slow_steps(&store, 10, 400).await;
    let total = queue(&store, runs).await;
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| Node::worker(dir.path(), &db, &format!("w{i}"), &["--workers", "8"]))
        .collect();
    let mut admin = connect(&db).await;
    let mut terminated = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        terminated += killed.len();
    }
    assert!(terminated > 0, "no worker connection was terminated");
    wait_finished(&db, total, Duration::from_secs(300), &mut nodes).await;
    assert_succeeded_once(&db).await;
}

/// Three processes run the scheduler on an every-second schedule: each
/// fire time yields exactly one run, and none is skipped. (Checked to fail
/// without the compare-and-set on the stored fire time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_fire_each_second_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let store = db.open().await;
    save(
        &store,
        "tick",
        vec![transform("a", &[])],
        json!({"trigger": {"type": "schedule", "cron": "* * * * * *"}}),
    )
    .await;
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::worker(dir.path(), &db, &format!("s{i}"), &["--workers", "4"]))
        .collect();
    tokio::time::sleep(Duration::from_secs(7)).await;
    for node in nodes.iter_mut() {
        node.assert_alive();
    }
    drop(nodes);
    let mut conn = connect(&db).await;
    let fires: Vec<String> = sqlx::query_scalar(
        "SELECT trigger->'payload'->>'fire_time' FROM runs WHERE workflow_name = 'tick'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut by_time: BTreeMap<String, usize> = BTreeMap::new();
    for fire in &fires {
        *by_time.entry(fire.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = by_time.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "fire times run twice: {repeated:?}");
    assert!(
        by_time.len() >= 4,
        "only {} fires in 7 s: {fires:?}",
        by_time.len()
    );
    let seconds: Vec<i64> = by_time
        .keys()
        .map(|t| {
            humantime::parse_rfc3339_weak(t)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        })
        .collect();
    let gaps: Vec<_> = seconds.windows(2).filter(|w| w[1] - w[0] != 1).collect();
    assert!(
        gaps.is_empty(),
        "fire times skipped: {gaps:?} in {seconds:?}"
    );
}

/// The events of one SSE stream, as (event name, data) pairs, read until
/// `run_finished` (or 30 s).
async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("reading the stream"),
        ));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let name = frame.lines().find_map(|l| l.strip_prefix("event: "));
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(name), Some(data)) = (name, data) {
                events.push((
                    name.to_owned(),
                    serde_json::from_str(data).unwrap_or(Value::Null),
                ));
                if name == "run_finished" {
                    return events;
                }
            }
        }
    }
    events
}

/// An API-only node (`serve --no-workers`) and a worker in another
/// process: a run triggered through the API is executed by the worker, its
/// SSE stream on the API node shows its steps finish, a cancel sent to the
/// API node stops it in the worker, and `?wait=` answers with the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_streams_and_cancels_runs_a_worker_executes() {
    let dir = tempfile::tempdir().unwrap();
    let db = postgres_db().await;
    let port = crate::cli::free_port();
    let token = "scale-test-token";
    let mut api = Node::api(dir.path(), &db, port, token);
    let _worker = Node::worker(dir.path(), &db, "w", &["--workers", "4"]);
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/health")).send().await.is_err() {
        api.assert_alive();
        assert!(Instant::now() < deadline, "the API never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |path: &str| client.post(format!("{base}{path}")).bearer_auth(token);
    let definition = json!({"name": "slowcancel", "vars": {"n": 0}, "steps": [
        slow("s1", &[], 100), slow("s2", &["s1"], 20_000), transform("s3", &["s2"])
    ]});
    let saved = post("/workflows").json(&definition).send().await.unwrap();
    assert!(
        saved.status().is_success(),
        "{}",
        saved.text().await.unwrap()
    );

    let queued: Value = post("/workflows/slowcancel/runs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = queued["id"].as_str().expect("a run id").to_owned();
    let stream = client
        .get(format!("{base}/runs/{id}/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(stream.status().is_success());
    let events = tokio::spawn(read_events(stream));
    // Cancel once s1 finished (the worker is in s2's 20 s sleep).
    let mut conn = connect(&db).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM step_runs WHERE run_id = $1::uuid AND step_id = 's1' AND status = 'succeeded'",
        )
        .bind(&id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if done == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "s1 never finished\n{}",
            api.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = post(&format!("/runs/{id}/cancel")).send().await.unwrap();
    assert_eq!(
        cancel.status().as_u16(),
        202,
        "{}",
        cancel.text().await.unwrap()
    );
    let started = Instant::now();
    let events = events.await.unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let s1 = events
        .iter()
        .any(|(n, d)| n == "step_finished" && d["step"] == "s1" && d["status"] == "succeeded");
    assert!(
        s1,
        "no step_finished for s1 from the other process: {events:?}"
    );
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "run_finished", "{names:?}");
    assert_eq!(data["status"], "cancelled", "{data}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the cancel took {:?} to reach the worker",
        started.elapsed()
    );

    // A second run, waited for through the API node.
    let fast = json!({"name": "fast", "vars": {"n": 0}, "steps": [transform("a", &[])]});
    assert!(
        post("/workflows")
            .json(&fast)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let waited: Value = post("/workflows/fast/runs?wait=30s")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(waited["status"], "succeeded", "{waited}");
}
