//! Topic policies on PostgreSQL: each policy's rows are found by a condition on `topic`, removed by age (and by
//! count, for a policy with a cap) a bounded batch per statement, and its removal position is moved in the same
//! statement that deletes, so no reader ever sees an event gone without the position that says so.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::pool::Db;
use super::statement::{fetch, unavailable, within};
use crate::Result;
use crate::event::LogQuery;
use crate::policy::{PolicyState, TopicPolicies};

/// Most rows one retention statement deletes, so no delete holds locks for long.
pub(super) const RETENTION_BATCH: i64 = 5000;

/// The topic policies, each with its key and the SQL condition that selects its rows.
pub(super) struct PgPolicies {
    pub(super) policies: TopicPolicies,
    /// By policy index: `topic` matches this policy's patterns and no earlier policy's.
    conditions: Vec<String>,
}

impl PgPolicies {
    pub(super) fn new(policies: TopicPolicies) -> Self {
        let matches: Vec<String> = policies.iter().map(|p| matches_sql(&p.topics)).collect();
        let conditions = (0..policies.len())
            .map(|i| {
                let earlier = &matches[..i];
                let own = if policies.get(i).is_default() { "true" } else { matches[i].as_str() };
                if earlier.is_empty() { own.to_owned() } else { format!("{own} AND NOT ({})", earlier.join(" OR ")) }
            })
            .collect();
        Self { policies, conditions }
    }

    /// The keys of the policies `query` reaches, for the reads' removal position.
    pub(super) fn keys_for(&self, query: &LogQuery) -> Vec<String> {
        let reached = self.policies.reached_by(&query.topics);
        self.policies.members(reached).map(|i| self.policies.get(i).key().to_owned()).collect()
    }

    /// Adds a row for each policy new to the database. A new policy starts where every earlier position stands:
    /// its topics may have been removed under another policy, up to the highest position any policy reached (or,
    /// on a log older than policies, below its oldest event).
    pub(super) async fn register(&self, db: &Db) -> Result<()> {
        for policy in self.policies.iter() {
            let statement = sqlx::query(
                "INSERT INTO realtime_policies (key, name, removed_through, scanned_through) \
                 SELECT $1, $2, \
                   greatest((SELECT max(removed_through) FROM realtime_policies), floor.at), floor.at \
                 FROM (SELECT coalesce((SELECT min(id) - 1 FROM realtime_events), \
                                       (SELECT head FROM realtime_log_state WHERE singleton)) AS at) floor \
                 ON CONFLICT (key) DO UPDATE SET name = excluded.name, used_at = now()",
            )
            .bind(policy.key())
            .bind(&policy.name);
            db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?;
        }
        Ok(())
    }

    /// Removes, for each policy, its events older than its retention and those past its cap; how many went, by
    /// policy index. Idempotency keys live as long as the longest retention: a retry after that stores anew.
    pub(super) async fn prune(&self, db: &Db, now: DateTime<Utc>) -> Result<Vec<u64>> {
        let mut removed = vec![0; self.policies.len()];
        for (index, policy) in self.policies.iter().enumerate() {
            let sql = self.prune_sql(index);
            loop {
                let statement = sqlx::query(&sql)
                    .bind(policy.key())
                    .bind(now - policy.max_age)
                    .bind(RETENTION_BATCH)
                    .bind(policy.cap.map(|c| c as i64));
                let deleted = db
                    .run(async |conn, timeout| within(timeout, fetch(statement.fetch_one(conn))).await)
                    .await?
                    .try_get::<i64, _>("deleted")
                    .map_err(unavailable)? as u64;
                removed[index] += deleted;
                if deleted < RETENTION_BATCH as u64 {
                    break;
                }
            }
        }
        let longest = self.policies.iter().map(|p| p.max_age).max().unwrap_or_default();
        let statement = sqlx::query("DELETE FROM realtime_idempotency WHERE created_at < $1").bind(now - longest);
        db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?;
        Ok(removed)
    }

    /// One batch of policy `index`'s removal. `$1` its key, `$2` its age cutoff, `$3` the batch, `$4` its cap.
    ///
    /// The walk starts at `scanned_through` and ends at the edge: the first event younger than the cutoff (ids
    /// are given in commit order under one lock, with `clock_timestamp()`, so everything below it is older), or
    /// past the newest event the cap keeps, whichever is higher. A batch that was not full moved
    /// `scanned_through` up to the edge, so the next walk starts there.
    fn prune_sql(&self, index: usize) -> String {
        let condition = &self.conditions[index];
        format!(
            "WITH policy AS (SELECT scanned_through AS floor FROM realtime_policies WHERE key = $1), \
             capped AS (SELECT coalesce((SELECT id + 1 FROM realtime_events WHERE $4::bigint IS NOT NULL AND {condition} \
                          ORDER BY id DESC OFFSET $4 LIMIT 1), 0) AS edge), \
             aged AS (SELECT coalesce( \
                 (SELECT e.id FROM realtime_events e, policy WHERE e.id > policy.floor AND e.created_at >= $2 \
                  ORDER BY e.id LIMIT 1), \
                 (SELECT head + 1 FROM realtime_log_state WHERE singleton)) AS edge), \
             edge AS (SELECT greatest(aged.edge, capped.edge) AS id FROM aged, capped), \
             doomed AS (SELECT e.id FROM realtime_events e, policy, edge \
                 WHERE e.id > policy.floor AND e.id < edge.id AND {condition} ORDER BY e.id LIMIT $3), \
             gone AS (DELETE FROM realtime_events WHERE id IN (SELECT id FROM doomed) RETURNING id), \
             tally AS (SELECT count(*) AS n, max(id) AS newest FROM gone), \
             moved AS (UPDATE realtime_policies SET \
                 removed_through = greatest(removed_through, coalesce(tally.newest, 0)), \
                 removed = removed + tally.n, \
                 scanned_through = greatest(scanned_through, \
                     CASE WHEN tally.n < $3 THEN edge.id - 1 ELSE tally.newest END) \
                 FROM tally, edge WHERE key = $1 RETURNING 1) \
             SELECT (SELECT n FROM tally) AS deleted, (SELECT count(*) FROM moved) AS moved"
        )
    }

    /// What each policy holds. The oldest retained event is looked for from where removal stands, so a policy
    /// whose topics are rare costs a walk of the log up to its next event.
    pub(super) async fn states(&self, db: &Db) -> Result<Vec<PolicyState>> {
        let mut states = Vec::with_capacity(self.policies.len());
        for (index, policy) in self.policies.iter().enumerate() {
            let condition = &self.conditions[index];
            let sql = format!(
                "SELECT p.removed_through, p.removed, \
                   (SELECT id FROM realtime_events WHERE id > p.scanned_through AND {condition} \
                    ORDER BY id LIMIT 1) AS oldest \
                 FROM realtime_policies p WHERE key = $1"
            );
            let statement = sqlx::query(&sql).bind(policy.key());
            let row = db.run(async |conn, timeout| within(timeout, fetch(statement.fetch_one(conn))).await).await?;
            let number = |column: &str| row.try_get::<Option<i64>, _>(column).map_err(unavailable);
            states.push(PolicyState {
                name: policy.name.clone(),
                oldest: number("oldest")?.map(|id| id as u64),
                removed_through: number("removed_through")?.unwrap_or(0) as u64,
                removed: number("removed")?.map(|n| n as u64),
            });
        }
        Ok(states)
    }
}

/// `topic` matches one of `patterns`, as SQL. The patterns are written into the statement: a topic pattern is made
/// of `[A-Za-z0-9_.:-]` and a final `*` only (`protocol::TopicPattern::parse`), none of which can end a string
/// literal; `_`, a LIKE wildcard, is escaped.
fn matches_sql(patterns: &[protocol::TopicPattern]) -> String {
    let parts: Vec<String> = patterns
        .iter()
        .map(|p| match p {
            protocol::TopicPattern::Exact(t) => format!("topic = '{}'", t.as_str()),
            protocol::TopicPattern::Prefix(prefix) if prefix.is_empty() => "true".to_owned(),
            protocol::TopicPattern::Prefix(prefix) => format!("topic LIKE '{}%'", prefix.replace('_', "\\_")),
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Retention;

    #[test]
    fn each_policy_selects_its_topics_and_none_an_earlier_policy_took() {
        let text = "[[policy]]\ntopics = [\"run.logs\", \"task_*\"]\n[[policy]]\ntopics = [\"run.*\"]";
        let pg = PgPolicies::new(TopicPolicies::from_toml(text, Retention::default()).unwrap());
        assert_eq!(pg.conditions[0], "(topic = 'run.logs' OR topic LIKE 'task\\_%')");
        assert_eq!(pg.conditions[1], "(topic LIKE 'run.%') AND NOT ((topic = 'run.logs' OR topic LIKE 'task\\_%'))");
        assert_eq!(
            pg.conditions[2],
            "true AND NOT ((topic = 'run.logs' OR topic LIKE 'task\\_%') OR (topic LIKE 'run.%'))"
        );
    }
}
