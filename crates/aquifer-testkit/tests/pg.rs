//! Throwaway PostgreSQL servers, checked with a real client.

use std::time::{Duration, Instant};

use aquifer_testkit::{Fault, FaultProxy, PgServer};

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

#[tokio::test]
async fn a_server_starts_checks_passwords_and_serves_queries() {
    let start = Instant::now();
    let pg = PgServer::new().unwrap();
    eprintln!("server up in {:?}", start.elapsed());
    let c = connect(&pg.url()).await.unwrap();
    let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let wrong = pg.url().replace("aquifer-test", "not-the-password");
    let err = connect(&wrong).await.unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("password"), "{text}");
    let db = pg.create_database("app").unwrap();
    let c2 = connect(&db).await.unwrap();
    let name: String = c2
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "app");
}

#[tokio::test]
async fn stop_kill_and_start_again_keep_data_and_port() {
    let mut pg = PgServer::new().unwrap();
    let port = pg.port();
    pg.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .unwrap();
    pg.stop().unwrap();
    assert!(!pg.is_running());
    assert!(
        connect(&pg.url()).await.is_err(),
        "a stopped server refuses"
    );
    pg.start().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(pg.psql("SELECT v FROM t").unwrap(), "7");

    // An immediate shutdown drops open sessions at once, like a crash.
    let c = connect(&pg.url()).await.unwrap();
    pg.kill().unwrap();
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || format!("{err}").contains("terminat"),
        "{err}"
    );
    pg.start().unwrap();
    assert_eq!(pg.psql("SELECT v FROM t").unwrap(), "7");
    assert!(pg.log().contains("not properly shut down") || pg.log().contains("recovery"));
}

#[tokio::test]
async fn sessions_are_counted_by_application_name() {
    let pg = PgServer::builder().max_connections(20).start().unwrap();
    let url = format!("{}?application_name=counted", pg.url());
    let a = connect(&url).await.unwrap();
    let _b = connect(&url).await.unwrap();
    assert_eq!(pg.sessions("counted").unwrap(), 2);
    drop(a);
    let give_up = Instant::now() + Duration::from_secs(5);
    while pg.sessions("counted").unwrap() != 1 {
        assert!(Instant::now() < give_up, "the closed session never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pg.psql("SHOW max_connections").unwrap(), "20");
}

#[tokio::test]
async fn trust_skips_passwords_and_settings_apply() {
    let pg = PgServer::builder()
        .trust()
        .setting("application_name", "from-settings")
        .start()
        .unwrap();
    let url = pg.url().replace("aquifer-test", "anything");
    let c = connect(&url).await.unwrap();
    let app: String = c
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "from-settings");
}

#[test]
fn dropping_a_server_stops_it_and_removes_its_files() {
    let pg = PgServer::new().unwrap();
    let pid = pg.pid().unwrap();
    let dir = pg.dir().to_owned();
    assert!(dir.join("data/PG_VERSION").is_file());
    drop(pg);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    // The postmaster is reaped by `drop`; its pid is gone (or reused by
    // something that is not a postgres of ours).
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!cmdline.contains("aquifer-pg-"), "still running: {cmdline}");
}

#[tokio::test]
async fn a_query_through_the_proxy_is_cut_by_a_reset() {
    let pg = PgServer::new().unwrap();
    let proxy = FaultProxy::start(pg.addr()).unwrap();
    let c = connect(&pg.url_through(&proxy)).await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    proxy.reset_all();
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || format!("{err:?}").contains("reset"),
        "{err:?}"
    );
    proxy.set(Fault::Refuse);
    assert!(connect(&pg.url_through(&proxy)).await.is_err());
    proxy.set(Fault::Pass);
    connect(&pg.url_through(&proxy)).await.unwrap();
}
