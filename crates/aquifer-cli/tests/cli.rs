//! The `aquifer` binary, run as a user would: the embedded default, config
//! files against real PostgreSQL and MariaDB servers, `check`, `bench`, and
//! configuration errors.

use std::time::{Duration, Instant};

use aquifer_testkit::{MariaDbServer, PgServer, MARIADB_PASSWORD, PG_PASSWORD};
use serde_json::Value;

mod common;

use common::*;

#[test]
fn serve_with_no_configuration_runs_the_embedded_default() {
    // A relative data directory is the working directory's.
    let work = tempfile::tempdir().unwrap();
    let s = Serving::start(aquifer().current_dir(work.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "demo",
    ]));
    let data = work.path().join("demo");
    let token = s.token.clone().expect("a generated token is printed");
    assert_eq!(token.len(), 64);

    let (status, body) = http(&s.addr, "GET", "/readyz", None);
    assert_eq!(status, 200, "{body}");
    until("traffic on every pool", || {
        let pools = json(&s.addr, "/api/pools");
        let names: Vec<_> = pools
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        assert_eq!(names, ["local_1", "local_2", "local_3"]);
        pools
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metrics"]["gets"].as_u64().unwrap() > 3)
    });
    let (status, body) = http(&s.addr, "POST", "/api/pools/local_1/freeze", None);
    assert_eq!(
        (status, body.contains("unauthorized")),
        (401, true),
        "{body}"
    );
    let (status, _) = http(&s.addr, "POST", "/api/pools/local_2/freeze", Some(&token));
    assert_eq!(status, 200);
    assert_eq!(json(&s.addr, "/api/pools/local_2")["state"], "frozen");
    let (status, metrics) = http(&s.addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"aquifer_connections{cluster="local",pool="local_1",tags="primary",state="idle"}"#
        ),
        "{metrics}"
    );
    let (status, page) = http(&s.addr, "GET", "/", None);
    assert!(status == 200 && page.contains("<title>aquifer</title>"));

    let (code, printed) = s.stop();
    assert_eq!(code, 0, "{printed}");
    assert!(printed.contains("closed 3 pools"), "{printed}");
    // The demo's own load is nothing an operator must act on.
    assert!(!printed.contains(" WARN "), "{printed}");
    assert_eq!(
        printed.matches(&token).count(),
        1,
        "the token is printed once"
    );
    // Every connection closed: SQLite removes a WAL file when the last
    // connection to its database closes.
    for i in 1..=3 {
        assert!(data.join(format!("local_{i}.db")).exists());
        let wal = data.join(format!("local_{i}.db-wal"));
        assert!(
            !wal.exists(),
            "{} is left: a connection stayed open",
            wal.display()
        );
    }
}

#[test]
fn configuration_errors_name_the_file_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("a.db");
    let good = format!(
        "[pools.a]\nurl = \"sqlite://{}\"\nmax = 4\n",
        sqlite.display()
    );
    let file = write(dir.path(), "good.toml", &good);
    let (code, out, err) = run(aquifer().args(["config", "check", "--config", &file]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");

    for (text, line, field, says) in [
        (
            format!("{good}maxx = 3\n"),
            4,
            "pools.a.maxx",
            "unknown field",
        ),
        (
            good.replace("max = 4", "max = \"lots\""),
            3,
            "pools.a.max",
            "invalid type",
        ),
        (
            good.replace("max = 4", "max = 4\nmin = 9"),
            0,
            "pools.a",
            "min",
        ),
        (
            format!("{good}cluster = \"main\"\n"),
            4,
            "pools.a.cluster",
            "[clusters.main]",
        ),
        (
            format!("[admin]\nlisten = 7\n{good}"),
            2,
            "admin.listen",
            "expected an address",
        ),
        (
            good.replace("max = 4", "acquire_timeout = 2"),
            3,
            "pools.a.acquire_timeout",
            r#"`2` has no unit: write "2s" or "2ms""#,
        ),
        (
            format!("[clusters.c]\nban_time = 30\n{good}"),
            2,
            "clusters.c.ban_time",
            r#"write "30s" or "30ms""#,
        ),
        (
            format!("[clusters.c]\nmode = \"fastest\"\n{good}"),
            2,
            "clusters.c.mode",
            "round_robin",
        ),
        (
            good.replace("sqlite://", "oracle://"),
            2,
            "pools.a.url",
            "is not a database URL",
        ),
        (
            "[pools.a]\nurl = \"not a url\"\n".to_owned(),
            2,
            "pools.a.url",
            "sqlite:///absolute/path.db",
        ),
        (
            "[pools.a]\nurl = \"localhost:5432\"\n".to_owned(),
            2,
            "pools.a.url",
            "postgres://user@host:5432/db",
        ),
        (
            "[pools.a]\nurl = \"postgres://app@db/app\"\ncreate = true\n".to_owned(),
            3,
            "pools.a.create",
            "only a sqlite: pool",
        ),
        (
            format!("{good}[pools.b]\nmax = 2\n"),
            4,
            "pools.b.url",
            "missing",
        ),
    ] {
        let file = write(dir.path(), "bad.toml", &text);
        let (code, _, err) = run(aquifer().args(["config", "check", "--config", &file]));
        assert_eq!(code, 2, "{text}\n{err}");
        let place = if line > 0 {
            format!("{file}:{line}:")
        } else {
            format!("{file}:")
        };
        assert!(err.contains(&place), "want {place} in: {err}");
        assert!(
            err.contains(&format!("`{field}`")),
            "want {field} in: {err}"
        );
        assert!(err.contains(says), "want {says} in: {err}");
    }
    let file = write(dir.path(), "syntax.toml", "[pools.a]\nurl = \"x\nmax = 1\n");
    let (code, _, err) = run(aquifer().args(["config", "check", "--config", &file]));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{file}:2:")) && err.contains("not valid TOML"),
        "{err}"
    );

    // The environment wins over the file, and a bad value from it says so.
    let file = write(dir.path(), "env.toml", &good);
    let (code, _, err) = run(aquifer()
        .args(["config", "check", "--config", &file])
        .env("AQUIFER_POOLS_A_MAX", "many"));
    assert_eq!(code, 2);
    assert!(
        err.contains("environment variable AQUIFER_POOLS_A_MAX") && err.contains("`pools.a.max`"),
        "{err}"
    );
    let (code, _, err) = run(aquifer()
        .args(["config", "check", "--config", &file])
        .env("AQUIFER_POOLS_A_IDLE_TIMEOUT", "60"));
    assert_eq!(code, 2);
    assert!(
        err.contains("AQUIFER_POOLS_A_IDLE_TIMEOUT") && err.contains(r#"write "60s" or "60ms""#),
        "{err}"
    );
    let (code, _, err) = run(aquifer().args(["check", "--timeout", "5", "--config", &file]));
    assert_eq!(code, 2);
    assert!(err.contains(r#"write "5s" or "5ms""#), "{err}");
    let (code, _, err) = run(aquifer()
        .args(["config", "check", "--config", &file])
        .env("AQUIFER_POOLS_NOPE_MAX", "3"));
    assert_eq!(code, 2);
    assert!(
        err.contains("AQUIFER_POOLS_NOPE_MAX") && err.contains("names no pool"),
        "{err}"
    );

    let (code, out, _) = run(aquifer().args(["--help"]));
    assert!(
        code == 0 && out.contains("serve") && out.contains("Exit codes"),
        "{out}"
    );
    for sub in ["serve", "check", "bench", "config"] {
        let (code, out, _) = run(aquifer().args([sub, "--help"]));
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("Usage"), "{out}");
    }
    let (code, out, _) = run(aquifer().args(["--version"]));
    assert!(code == 0 && out.starts_with("aquifer "), "{out}");
    let (code, example, _) = run(aquifer().args(["config", "example"]));
    assert_eq!(code, 0);
    assert!(example.contains("[clusters.main]") && example.contains("password_file"));
}

/// `config check` checks everything `serve` would, reports every error
/// at once with its line, and touches nothing on disk; the example it
/// prints passes as printed and names every pool setting.
#[test]
fn config_check_reports_every_error_at_once_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty_pw = write(dir.path(), "empty-pw", "");
    let text = format!(
        "[admin]\nlisten = \"nope\"\ntoken = \"t\"\ntoken_file = \"token\"\n\n\
         [clusters.c]\nlog_file = \"events.log\"\nban_time = 30\n\n\
         [pools.a]\nurl = \"postgres://app@db/app\"\npassword_file = \"{empty_pw}\"\n\
         password_env = \"AQUIFER_TEST_UNSET\"\ncluster = \"c\"\n\n\
         [pools.b]\nurl = \"sqlite://b.db\"\ncreate = true\ncluster = \"c\"\n"
    );
    let file = write(dir.path(), "many.toml", &text);
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    // Positionally, as well as with --config.
    let (code, _, err) = run(aquifer().args(["config", "check", &file]));
    assert_eq!(code, 2, "{err}");
    for (line, field, says) in [
        (2, "admin.listen", "is not an address to listen on"),
        (4, "admin.token_file", "both token and token_file"),
        (4, "admin.token_file", "cannot read"),
        (8, "clusters.c.ban_time", "has no unit"),
        (12, "pools.a.password_file", "is empty"),
        (
            13,
            "pools.a.password_env",
            "both password_file and password_env",
        ),
        (13, "pools.a.password_env", "AQUIFER_TEST_UNSET is not set"),
        (19, "pools.b.cluster", "a cluster holds one driver"),
    ] {
        let want = format!("error: {file}:{line}: `{field}`: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&want) && l.contains(says)),
            "want {want}…{says} in:\n{err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        before.len(),
        "config check created a file"
    );

    // A multiplexer: its name served once, its URL PostgreSQL's, each
    // cause named once.
    let file = write(
        dir.path(),
        "mux.toml",
        "[pools.m]\nurl = \"sqlite::memory:\"\n[multiplexers.m]\nurl = \"sqlite://x.db\"\n",
    );
    let (code, _, err) = run(aquifer().args(["config", "check", &file]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{file}:3: `multiplexers.m`: `m` is also a pool")),
        "{err}"
    );
    assert_eq!(err.matches("`multiplexers.m.url`").count(), 1, "{err}");
    assert!(err.contains("give a postgres:// URL"), "{err}");

    for (text, says) in [
        ("", "the file is empty"),
        ("# nothing yet\n", "no pools are defined"),
        (
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "no pools are defined",
        ),
    ] {
        let file = write(dir.path(), "thin.toml", text);
        let (code, _, err) = run(aquifer().args(["config", "check", "--config", &file]));
        assert_eq!(code, 2, "{text:?}: {err}");
        assert!(err.contains(says), "{text:?}: {err}");
    }

    // serve refuses a bad --listen before any pool starts.
    let good = write(
        dir.path(),
        "good.toml",
        "[pools.m]\nurl = \"sqlite::memory:\"\n",
    );
    let (code, out, err) = run(aquifer().args(["serve", "--listen", "nope", "--config", &good]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--listen") && err.contains("host:port"),
        "{err}"
    );
    assert!(!out.contains("serving"), "{out}");

    // A data directory that cannot be made is named.
    let blocked = dir.path().join("good.toml").join("data");
    let (code, _, err) = run(aquifer()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&blocked));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&blocked.display().to_string()), "{err}");

    // The example passes as printed, and names every pool setting.
    let (code, example, _) = run(aquifer().args(["config", "example"]));
    assert_eq!(code, 0);
    let file = write(dir.path(), "example.toml", &example);
    let (code, out, err) = run(aquifer().args(["config", "check", &file]));
    assert_eq!(code, 0, "{out}{err}");
    // Every pool and multiplexer setting (optional ones without a value
    // are not serialized: named by hand).
    let mut keys: Vec<String> = ["max_waiting", "tests_per_eviction_run", "max_queued"]
        .map(String::from)
        .to_vec();
    for defaults in [
        toml::Value::try_from(aquifer::PoolConfig::default()).unwrap(),
        toml::Value::try_from(aquifer::MuxConfig::default()).unwrap(),
    ] {
        keys.extend(defaults.as_table().unwrap().keys().cloned());
    }
    for key in keys {
        assert!(
            example
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
            "the example does not show `{key}`"
        );
    }
    assert!(!dir.path().join("cache.db").exists());
}

/// The binary speaks TLS as managed databases want it: `sslmode` and
/// `sslrootcert` for PostgreSQL, verified against the CA, and a certificate
/// from another CA is refused with the reason.
#[test]
fn check_connects_over_verified_tls() {
    let pki = aquifer_testkit::TestPki::new();
    let pg = PgServer::builder()
        .ssl(&pki.cert(), &pki.key())
        .ssl_only()
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", pki.ca_pem());
    let stranger = write(
        dir.path(),
        "stranger.pem",
        &aquifer_testkit::TestPki::stranger_ca_pem(),
    );
    let url = |root: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={root}",
            pg.port()
        )
    };
    for (root, healthy) in [(&ca, true), (&stranger, false)] {
        let config = write(
            dir.path(),
            "tls.toml",
            &format!(
                "[pools.pg]\nurl = \"{}\"\npassword_env = \"TEST_PG_PW\"\n",
                url(root)
            ),
        );
        let (code, out, err) = run(aquifer()
            .args(["check", "--config", &config, "--timeout", "5s"])
            .env("TEST_PG_PW", PG_PASSWORD));
        if healthy {
            assert_eq!(code, 0, "{out}{err}");
            assert!(out.contains("healthy"), "{out}");
        } else {
            assert_eq!(code, 1, "{out}{err}");
            assert!(out.contains("certificate"), "{out}");
        }
        assert!(!out.contains(PG_PASSWORD) && !err.contains(PG_PASSWORD));
    }
}

/// A SQLite file is found where the configuration says, relative to the
/// file's own directory, percent-escapes decoded; `check` and `bench`
/// never create one that is not there unless `create = true` says so.
#[test]
fn sqlite_files_are_never_created_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "a.toml",
        "[pools.a]\nurl = \"sqlite://data/app.db\"\n",
    );
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let wanted = dir.path().join("data/app.db");

    // Run from another directory: the path is the configuration's.
    let (code, out, err) = run(aquifer()
        .env_remove("RUST_LOG")
        .current_dir(elsewhere.path())
        .args(["check", "--config", &conf]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("cannot open {}: no such file", wanted.display()))
            && out.contains("create = true"),
        "{out}"
    );
    assert!(
        err.is_empty(),
        "check logs nothing unless RUST_LOG asks: {err}"
    );
    let (code, out, err) = run(aquifer().current_dir(elsewhere.path()).args([
        "bench",
        "--duration",
        "1s",
        "--config",
        &conf,
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no such file"), "{err}");
    let (code, _, err) = run(aquifer().current_dir(elsewhere.path()).args([
        "bench",
        "--duration",
        "1s",
        "--url",
        "sqlite://app.db",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(!wanted.exists() && !elsewhere.path().join("app.db").exists());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);

    let conf = write(
        dir.path(),
        "a.toml",
        "[pools.a]\nurl = \"sqlite://data/my%20app.db\"\ncreate = true\n",
    );
    // The file positionally, as `config check` takes it too.
    let (code, out, err) = run(aquifer()
        .current_dir(elsewhere.path())
        .args(["check", &conf]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.path().join("data/my app.db").exists());
    // Once it exists, a pool that does not create opens it.
    let conf = write(
        dir.path(),
        "b.toml",
        "[pools.b]\nurl = \"sqlite://data/my%20app.db\"\n",
    );
    let (code, out, err) = run(aquifer()
        .current_dir(elsewhere.path())
        .args(["check", "--config", &conf]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(aquifer().args(["bench", "--url", "localhost:5432"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a database URL"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

/// Every wait has a deadline: `bench` against a port nobody listens on,
/// through the pool or the multiplexer, gives up at `--connect-timeout`
/// with the refusal, saying while it waits what it waits for.
#[test]
fn bench_gives_up_at_its_connect_timeout_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app@127.0.0.1:{port}/app");
    for through in [None, Some("--mux")] {
        let started = Instant::now();
        let (code, out, err) = run(aquifer()
            .args(["bench", "--url", &url, "--connect-timeout", "2s"])
            .args(through));
        let took = started.elapsed();
        assert_eq!(code, 1, "{through:?}: {out}{err}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(8),
            "{through:?}: {took:?}"
        );
        assert!(
            err.contains("waiting for 1 connection(s) to 127.0.0.1")
                && err.contains("none within --connect-timeout 2 s")
                && err.contains("Connection refused"),
            "{through:?}: {err}"
        );
    }
}

/// `check` probes every pool at once: three servers that do not answer
/// cost one timeout, not three.
#[test]
fn check_probes_every_pool_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut text = String::new();
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[pools.down_{i}]\nurl = \"postgres://app:pw@127.0.0.1:{port}/app\"\n\n"
        ));
    }
    let config = write(dir.path(), "down.toml", &text);
    let started = Instant::now();
    let (code, out, err) = run(aquifer().args(["check", "--config", &config, "--timeout", "2s"]));
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("unhealthy").count(), 3, "{out}");
    assert!(
        took < Duration::from_millis(4500),
        "{took:?}: one timeout, not three"
    );
}

/// `bench --url` takes nothing from an exported AQUIFER_CONFIG, and a
/// `--pool` the file does not have is named with the ones it has.
#[test]
fn bench_reads_what_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(aquifer()
        .env("AQUIFER_CONFIG", dir.path().join("missing.toml"))
        .args([
            "bench",
            "--url",
            "sqlite::memory:",
            "--duration",
            "200ms",
            "--tasks",
            "2",
        ]));
    assert_eq!(code, 0, "{out}{err}");
    let config = write(
        dir.path(),
        "two.toml",
        "[pools.a]\nurl = \"sqlite::memory:\"\n[pools.b]\nurl = \"sqlite::memory:\"\n",
    );
    let (code, _, err) = run(aquifer().args(["bench", "--config", &config, "--pool", "nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no pool `nope`; it has a, b"), "{err}");
}

/// PostgreSQL (its password from a file) in a cluster, MariaDB (its
/// password from the environment) on its own: `check`, `serve` with an
/// environment override, then `check` with PostgreSQL stopped.
#[test]
fn check_and_serve_real_servers_from_a_config_file() {
    let mut pg = PgServer::new().unwrap();
    let maria = MariaDbServer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = write(dir.path(), "pg-password", &format!("{PG_PASSWORD}\n"));
    let pg_url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let maria_url = maria.url().replace(&format!(":{MARIADB_PASSWORD}@"), "@");
    assert!(!maria_url.contains(MARIADB_PASSWORD));
    let config = write(
        dir.path(),
        "aquifer.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"cfg-token\"\n\n\
             [clusters.pg]\nmode = \"failover\"\n\n\
             [pools.pg_1]\ncluster = \"pg\"\nurl = \"{pg_url}\"\npassword_file = \"{pw_file}\"\nmax = 4\n\n\
             [pools.maria]\nurl = \"{maria_url}\"\npassword_env = \"TEST_MARIA_PW\"\nmax = 3\n\n\
             [multiplexers.reads]\nurl = \"{pg_url}\"\npassword_file = \"{pw_file}\"\nmax = 2\n"
        ),
    );
    let check = |json: bool| {
        let mut c = aquifer();
        c.args(["check", "--config", &config, "--timeout", "3s"])
            .env("TEST_MARIA_PW", MARIADB_PASSWORD);
        if json {
            c.arg("--json");
        }
        run(&mut c)
    };
    let (code, out, err) = check(false);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("pg_1")
            && out.contains("maria")
            && out.contains("reads")
            && out.matches("healthy").count() == 3,
        "{out}"
    );
    let (code, out, _) = check(true);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["pools"].as_array().unwrap().len(), 3);

    let s = Serving::start(
        aquifer()
            .args(["serve", "--config", &config])
            .env("TEST_MARIA_PW", MARIADB_PASSWORD)
            .env("AQUIFER_POOLS_PG_1_MAX", "7"),
    );
    assert_eq!(s.token, None, "a configured token is not printed");
    let pools = json(&s.addr, "/api/pools");
    assert_eq!(pools[0]["name"], "pg_1");
    assert_eq!(
        pools[0]["status"]["max"], 7,
        "the environment wins over the file"
    );
    assert_eq!(
        pools[0]["server"],
        format!("127.0.0.1:{}/postgres", pg.port())
    );
    assert_eq!(pools[1]["name"], "maria");
    // The multiplexer is a row of its own, with its connections.
    assert_eq!(pools[2]["name"], "reads");
    assert_eq!(pools[2]["multiplexer"]["max"], 2, "{pools}");
    let (status, _) = http(&s.addr, "POST", "/api/pools/pg_1/freeze", Some("cfg-token"));
    assert_eq!(status, 200);
    // Its cluster's only pool frozen: not ready, and the body says why;
    // the MariaDB pool on its own still is.
    let (status, ready) = http(&s.addr, "GET", "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    let body: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(body["not_ready"][0]["pool"], "pg_1", "{ready}");
    assert_eq!(body["not_ready"][0]["reason"], "frozen", "{ready}");
    let (status, maria) = http(&s.addr, "GET", "/readyz?cluster=maria", None);
    assert_eq!(status, 200, "{maria}");
    let mut everything = format!(
        "{pools}{ready}{maria}{}",
        http(&s.addr, "GET", "/metrics", None).1
    );
    let (code, printed) = s.stop();
    assert_eq!(code, 0, "{printed}");
    everything.push_str(&printed);
    assert!(
        !everything.contains(PG_PASSWORD),
        "the PostgreSQL password leaked"
    );
    assert!(
        !everything.contains(MARIADB_PASSWORD),
        "the MariaDB password leaked"
    );
    until("serve's PostgreSQL sessions to close", || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
            .unwrap()
            .trim()
            == "0"
    });

    pg.stop().unwrap();
    let (code, out, err) = check(false);
    assert_eq!(code, 1, "{out}\n{err}");
    let line = out.lines().find(|l| l.contains("pg_1")).unwrap();
    assert!(
        line.contains("unhealthy") && line.contains("127.0.0.1"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("maria") && l.contains("healthy") && !l.contains("unhealthy")),
        "{out}"
    );
    assert!(!out.contains(PG_PASSWORD) && !err.contains(PG_PASSWORD));
}

#[test]
fn bench_reports_a_table_and_json() {
    let pg = PgServer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = write(dir.path(), "pw", PG_PASSWORD);
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let bench = |extra: &[&str]| {
        run(aquifer()
            .args(["bench", "--url", &url, "--password-file", &pw_file])
            .args(extra))
    };
    let (code, out, err) = bench(&["--duration", "500ms", "--tasks", "8"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("per second") && out.contains("p99") && out.contains("errors        0"),
        "{out}"
    );
    assert!(!out.contains(PG_PASSWORD) && !err.contains(PG_PASSWORD));

    let (code, out, err) = bench(&[
        "--duration",
        "500ms",
        "--tasks",
        "8",
        "--mux",
        "--max",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["through"], "multiplexer");
    assert!(
        r["queries"].as_u64().unwrap() > 10 && r["errors"] == 0,
        "{r}"
    );

    let (code, out, err) = bench(&[
        "--workload",
        "sleep",
        "--queries",
        "40",
        "--sleep",
        "50ms",
        "--min",
        "2",
        "--max",
        "10",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["queries"], 40);
    let ideal = r["ideal_seconds"].as_f64().unwrap();
    assert!((ideal - 0.2).abs() < 1e-9, "{r}");
    assert!(r["ratio"].as_f64().unwrap() >= 1.0, "{r}");

    // A wrong password fails before the run, with the server's reason.
    let bad = write(dir.path(), "bad", "wrong");
    let (code, out, err) = run(aquifer().args([
        "bench",
        "--url",
        &url,
        "--password-file",
        &bad,
        "--duration",
        "200ms",
        "--tasks",
        "2",
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("could not open the first connections (min 1)") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password is not printed: {err}");

    // No password at all: the error says how to give one.
    let (code, out, err) = run(aquifer().env_remove("AQUIFER_PASSWORD").args([
        "bench",
        "--url",
        &url,
        "--duration",
        "200ms",
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("password missing") && err.contains("--password-file or AQUIFER_PASSWORD"),
        "{err}"
    );

    // Inputs that cannot be meant are refused before anything connects.
    for (args, says) in [
        (&["--tasks", "0"][..], "0 would do nothing"),
        (&["--duration", "0s"], "is zero"),
        (&["--duration", "5"], r#"write "5s" or "5ms""#),
        (
            &["--queries", "0", "--workload", "sleep"],
            "0 would do nothing",
        ),
    ] {
        let (code, _, err) = run(aquifer().args(["bench", "--url", &url]).args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) =
        run(aquifer().args(["bench", "--url", "sqlite::memory:", "--workload", "sleep"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the sleep workload needs a server"), "{err}");
    let (code, _, err) = run(aquifer().args(["check", "--timeout", "0s", "--config", "x.toml"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is zero"), "{err}");

    // Without a terminal, each progress line says what its numbers are.
    let (code, _, err) = bench(&["--duration", "1500ms", "--tasks", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.lines().any(|l| l.contains(" of 1 s: ")
            && l.contains(" queries done, ")
            && l.ends_with(" queries/s")),
        "{err}"
    );
}
