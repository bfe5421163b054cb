//! Housekeeping: a stopped task stays visible for an hour after it stopped, as in
//! ECS, and then leaves the API (DescribeTasks reports it MISSING).

use std::sync::Arc;
use std::time::Duration;

use wharf_aws::AwsError;
use wharf_store::Txn;

use super::{keys, EcsService};

/// How long a stopped task stays visible.
pub const STOPPED_TASK_RETENTION: Duration = Duration::from_secs(3600);

impl EcsService {
    /// Deletes the records of tasks that stopped more than an hour ago; returns how
    /// many went. A task changed meanwhile (its revision moved) is left for next time.
    pub async fn expire_stopped_tasks(&self) -> Result<usize, AwsError> {
        let cutoff = self.clock.now_millis() - STOPPED_TASK_RETENTION.as_millis() as i64;
        let view = self.fresh_view().await?;
        let mut expired = 0;
        for (region, cluster, id, revision) in view.tasks_stopped_before(cutoff) {
            let key = keys::task(&region, &cluster, &id);
            let txn = Txn::new().when_mod_revision(&key, revision).delete(&key);
            if self.records.commit(txn).await? {
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// Runs the housekeeping every `period` while the service lives.
pub fn spawn_housekeeping(ecs: Arc<EcsService>, period: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let ecs = Arc::downgrade(&ecs);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(ecs) = ecs.upgrade() else {
                return;
            };
            match ecs.expire_stopped_tasks().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tasks = n, "stopped tasks expired"),
                Err(error) => tracing::warn!(%error, "expiring stopped tasks failed"),
            }
        }
    });
}
