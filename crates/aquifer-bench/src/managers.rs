//! The no-op managers, one per pool crate: what is measured is the pool.

use std::convert::Infallible;

pub struct Noop;

impl aquifer::Manager for Noop {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
}

impl deadpool::managed::Manager for Noop {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

impl bb8::ManageConnection for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

#[qp::async_trait]
impl qp::resource::Manage for Noop {
    type Output = u64;
    type Error = Infallible;

    async fn try_create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
}

#[mobc::async_trait]
impl mobc::Manager for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn check(&self, conn: u64) -> Result<u64, Infallible> {
        Ok(conn)
    }
}

#[derive(Debug)]
pub struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl r2d2::ManageConnection for Noop {
    type Connection = u64;
    type Error = Never;

    fn connect(&self) -> Result<u64, Never> {
        Ok(0)
    }

    fn is_valid(&self, _: &mut u64) -> Result<(), Never> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}
