//! Traffic splits between versions of a service. A version other than the
//! current one that has a share of the traffic runs instances of its own,
//! placed like a service under the name [`canary_key`] gives it, so the
//! placement, reconcile and forwarding machinery serves it unchanged.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError};

/// The placement name of version `version` of `service` when it is served
/// beside the current version. `#` is not allowed in a service name, so
/// the name never collides with a service's.
pub fn canary_key(service: &str, version: u32) -> String {
    format!("{service}#v{version}")
}

/// The service and version a placement name stands for: `(name, None)`
/// for a service's own (current) instances.
pub fn split_key(key: &str) -> (&str, Option<u32>) {
    match key.rsplit_once("#v") {
        Some((name, v)) => match v.parse() {
            Ok(v) => (name, Some(v)),
            Err(_) => (key, None),
        },
        None => (key, None),
    }
}

/// Version → per cent of the requests, for the versions that get some.
pub type Weights = BTreeMap<u32, u32>;

impl Store {
    /// The split of `service` (empty: no split, the current version serves
    /// every request).
    pub async fn traffic(&self, service: &str) -> Result<Weights, StoreError> {
        let rows =
            sqlx::query("SELECT version, weight FROM traffic WHERE service = $1 ORDER BY version")
                .bind(service)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("version")?.max(0) as u32,
                    r.try_get::<i64, _>("weight")?.max(0) as u32,
                ))
            })
            .collect()
    }

    /// Every service's split, for the routing table of each node.
    pub async fn all_traffic(&self) -> Result<BTreeMap<String, Weights>, StoreError> {
        let rows = sqlx::query("SELECT service, version, weight FROM traffic")
            .fetch_all(&self.pool)
            .await?;
        let mut out: BTreeMap<String, Weights> = BTreeMap::new();
        for r in &rows {
            out.entry(r.try_get("service")?).or_default().insert(
                r.try_get::<i64, _>("version")?.max(0) as u32,
                r.try_get::<i64, _>("weight")?.max(0) as u32,
            );
        }
        Ok(out)
    }

    /// Replaces the split of `service` (an empty one ends it).
    pub async fn set_traffic(&self, service: &str, weights: &Weights) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM traffic WHERE service = $1")
            .bind(service)
            .execute(&mut *tx)
            .await?;
        for (v, w) in weights {
            sqlx::query("INSERT INTO traffic (service, version, weight) VALUES ($1, $2, $3)")
                .bind(service)
                .bind(i64::from(*v))
                .bind(i64::from(*w))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The placement names of the versions of `service` that run beside
    /// its current one.
    pub async fn canary_keys(&self, service: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT service FROM placements
             WHERE substr(service, 1, length($1) + 2) = $1 || '#v' ORDER BY service",
        )
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        let keys: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("service"))
            .collect::<Result<_, _>>()?;
        // The prefix is exact; the rest must be a version number.
        Ok(keys
            .into_iter()
            .filter(|k| matches!(split_key(k), (s, Some(_)) if s == service))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_service_and_version() {
        assert_eq!(canary_key("bert", 3), "bert#v3");
        assert_eq!(split_key("bert#v3"), ("bert", Some(3)));
        assert_eq!(split_key("bert"), ("bert", None));
        assert_eq!(split_key("bert#vx"), ("bert#vx", None));
    }
}
