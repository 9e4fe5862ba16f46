//! Fakes for the documentation's examples: managers that make plain values
//! and never fail, so that an example shows the call, not a server. Not
//! part of the API.

use std::convert::Infallible;
use std::time::Duration;

use crate::{
    Cluster, ClusterPool, Manager, Multiplexed, Pool, Role, RoleCheck, RoleManager, Roles,
};

/// A connection that does nothing.
pub struct Conn;

/// Makes [`Conn`]s.
pub struct Connector;

impl Manager for Connector {
    type Type = Conn;
    type Error = Infallible;

    async fn create(&self) -> Result<Conn, Infallible> {
        Ok(Conn)
    }
}

/// Makes connections that are the string "hello", shared by many requests.
pub struct Echo;

impl Manager for Echo {
    type Type = String;
    type Error = Infallible;

    async fn create(&self) -> Result<String, Infallible> {
        Ok("hello".into())
    }
}

impl Multiplexed for Echo {}

/// A server by name: its connections are its name. In a replica set the
/// one called "main" is the primary and the others are standbys.
pub struct Server(pub &'static str);

impl Manager for Server {
    type Type = &'static str;
    type Error = Infallible;

    async fn create(&self) -> Result<&'static str, Infallible> {
        Ok(self.0)
    }
}

impl RoleManager for Server {
    async fn check_role(&self, conn: &mut &'static str) -> Result<RoleCheck, Infallible> {
        let role = if *conn == "main" {
            Role::Primary
        } else {
            Role::Standby
        };
        Ok(RoleCheck::new(role, "a fixed role").replicating(true))
    }
}

/// The boxed error the examples' `main` returns.
pub type Error = Box<dyn std::error::Error>;

/// A pool of at most four [`Conn`]s.
pub fn pool() -> Result<Pool<Connector>, Error> {
    Ok(Pool::builder(Connector).max(4).build()?)
}

/// A multiplexer over one to four [`Echo`] connections.
pub fn mux() -> Result<crate::Multiplexer<Echo>, Error> {
    Ok(crate::Multiplexer::builder(Echo).min(1).max(4).build()?)
}

/// A cluster of the pools "eu_1", "eu_2" and "us_1".
pub fn cluster() -> Result<Cluster<Server>, Error> {
    let cluster = Cluster::builder().build();
    for name in ["eu_1", "eu_2", "us_1"] {
        cluster.add(ClusterPool::new(name, Pool::builder(Server(name)).build()?))?;
    }
    Ok(cluster)
}

/// A replica set of "main" (the primary) and "copy" (a standby), its roles
/// checked.
pub async fn replica_set() -> Result<Cluster<Server>, Error> {
    let set = Cluster::builder().roles(Roles::new()).build();
    for name in ["main", "copy"] {
        set.add(ClusterPool::new(name, Pool::builder(Server(name)).build()?))?;
    }
    set.roles_checked(Duration::from_secs(5)).await;
    Ok(set)
}
