//! The MariaDB server the driver tests run against.

use std::time::{Duration, Instant};

use aquifer_testkit::MariaDbServer;

#[test]
fn a_server_starts_stops_crashes_and_starts_again_on_the_same_data() {
    let started = Instant::now();
    let mut db = MariaDbServer::new().unwrap();
    eprintln!("started in {:?}", started.elapsed());
    assert!(db.url().contains(&format!(":{}/aquifer", db.port())));
    db.sql("CREATE TABLE aquifer.t (v INT) ENGINE=InnoDB; INSERT INTO aquifer.t VALUES (1)")
        .unwrap();
    assert!(std::net::TcpStream::connect(db.addr()).is_ok());

    db.kill().unwrap();
    assert!(!db.is_running());
    assert!(std::net::TcpStream::connect(db.addr()).is_err());
    db.start().unwrap();
    assert_eq!(db.sql("SELECT v FROM aquifer.t").unwrap().trim(), "1");

    db.stop().unwrap();
    assert!(db.sql("SELECT 1").is_err());
    db.start().unwrap();
    assert_eq!(db.sessions().unwrap(), 0);
}

#[test]
fn settings_reach_the_server_and_servers_are_independent() {
    let a = MariaDbServer::builder()
        .max_connections(12)
        .setting("wait_timeout", "33")
        .start()
        .unwrap();
    let b = MariaDbServer::new().unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(
        a.sql("SELECT @@max_connections, @@wait_timeout")
            .unwrap()
            .trim(),
        "12\t33"
    );
    a.sql("CREATE TABLE aquifer.only_a (v INT)").unwrap();
    assert!(b.sql("SELECT * FROM aquifer.only_a").is_err());
    // Each server has a temp dir of its own (its temporary tables live
    // there), not a /tmp shared with every other test's server.
    let tmp_a = a.sql("SELECT @@tmpdir").unwrap();
    let tmp_b = b.sql("SELECT @@tmpdir").unwrap();
    assert!(
        std::path::Path::new(tmp_a.trim()).starts_with(a.dir()),
        "{tmp_a}"
    );
    assert_ne!(tmp_a, tmp_b);
    let dir = a.dir().to_path_buf();
    drop(a);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!dir.exists(), "dropping the server removes its directory");
}
