//! Which agents are connected: the channel sessions this process holds decide.
//!
//! A session marks its instance `agentConnected: true` when it starts and false when it
//! ends. An instance can also claim a connected agent that no session serves: the
//! control plane restarted while the agent was gone. The sweeper corrects those after
//! a grace period long enough for live agents to reconnect.

use std::sync::Arc;
use std::time::Duration;

use wharf_aws::AwsError;

use super::agent_sessions::ChannelTarget;
use super::EcsService;

impl EcsService {
    /// Ends a session; returns whether it was still the instance's newest one (and so
    /// whether the instance is now without an agent).
    pub fn end_session(&self, instance_arn: &str, session: u64) -> bool {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        if sessions.get(instance_arn) == Some(&session) {
            sessions.remove(instance_arn);
            true
        } else {
            false
        }
    }

    fn has_session(&self, instance_arn: &str) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock poisoned");
        sessions.contains_key(instance_arn)
    }

    /// Marks `agentConnected: false` every instance that claims an agent but has no
    /// session here; returns how many were corrected.
    pub async fn sweep_disconnected_agents(&self) -> Result<usize, AwsError> {
        let view = self.fresh_view().await?;
        let mut corrected = 0;
        for (region, cluster, instance_id, instance_arn) in view.instances_claiming_agent() {
            if self.has_session(&instance_arn) {
                continue;
            }
            let cluster_arn = instance_arn
                .split_once(":container-instance/")
                .map(|(prefix, _)| format!("{prefix}:cluster/{cluster}"))
                .unwrap_or_default();
            let target = ChannelTarget {
                region,
                cluster,
                cluster_arn,
                instance_id,
                instance_arn: instance_arn.clone(),
            };
            // A session may have started since the view was read; it marks the
            // instance connected again right after, so the correction is harmless.
            if !self.has_session(&instance_arn) {
                self.set_agent_connected(&target, false).await?;
                corrected += 1;
            }
        }
        Ok(corrected)
    }
}

/// Runs the sweeper: first after `grace` (time for live agents to reconnect after a
/// restart), then every `period`.
pub fn spawn_liveness_sweeper(ecs: Arc<EcsService>, grace: Duration, period: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let ecs = Arc::downgrade(&ecs);
    runtime.spawn(async move {
        tokio::time::sleep(grace).await;
        loop {
            let Some(ecs) = ecs.upgrade() else {
                return;
            };
            match ecs.sweep_disconnected_agents().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    instances = n,
                    "marked agents without a session disconnected"
                ),
                Err(error) => tracing::warn!(%error, "agent liveness sweep failed"),
            }
            drop(ecs);
            tokio::time::sleep(period).await;
        }
    });
}
