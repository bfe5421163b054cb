//! Status types and their legal transitions.
//!
//! Each status knows which moves are legal (`can_move_to`); the lifecycle structs keep
//! their status private and change it only through methods that refuse illegal moves,
//! so no caller can, say, bring a STOPPED task back to RUNNING.

use serde::{Deserialize, Serialize};

/// A refused status change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {kind} transition from {from} to {to}")]
pub struct IllegalTransition {
    /// Which lifecycle refused ("task", "container instance", …).
    pub kind: &'static str,
    /// The status it was in.
    pub from: &'static str,
    /// The status asked for.
    pub to: &'static str,
}

/// Declares a status enum with its wire spelling (ECS's upper-case words).
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// ECS's spelling of this status.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses ECS's spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// A task's `lastStatus`. The order of the variants is the order of the lifecycle.
    TaskStatus {
        /// Resources (e.g. networking) are being set up.
        Provisioning = "PROVISIONING",
        /// Placed and waiting for its containers to start.
        Pending = "PENDING",
        /// Containers started; registering with load balancers and the like.
        Activating = "ACTIVATING",
        /// Running.
        Running = "RUNNING",
        /// Leaving load balancers before its containers are stopped.
        Deactivating = "DEACTIVATING",
        /// Containers are being stopped.
        Stopping = "STOPPING",
        /// Resources are being released.
        Deprovisioning = "DEPROVISIONING",
        /// Done; it never moves again.
        Stopped = "STOPPED",
    }
);

impl TaskStatus {
    /// A task only moves forward through its lifecycle; steps may be skipped (a task
    /// that fails to start goes from PENDING straight to STOPPED), but it never goes
    /// back and never leaves STOPPED.
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        next > self
    }
}

status_enum!(
    /// A task's `desiredStatus`.
    DesiredTaskStatus {
        /// The task should run.
        Running = "RUNNING",
        /// The task should stop.
        Stopped = "STOPPED",
    }
);

status_enum!(
    /// Why a task stopped (`stopCode`).
    StopCode {
        /// The task could not start.
        TaskFailedToStart = "TaskFailedToStart",
        /// An essential container exited.
        EssentialContainerExited = "EssentialContainerExited",
        /// StopTask was called.
        UserInitiated = "UserInitiated",
        /// The service scheduler stopped it.
        ServiceSchedulerInitiated = "ServiceSchedulerInitiated",
        /// Spot capacity was reclaimed.
        SpotInterruption = "SpotInterruption",
        /// The instance is being terminated.
        TerminationNotice = "TerminationNotice",
    }
);

/// The status of one task: where it is, where it should go, and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLifecycle {
    last: TaskStatus,
    desired: DesiredTaskStatus,
    stop_code: Option<StopCode>,
    stopped_reason: Option<String>,
}

impl TaskLifecycle {
    /// A task that was just placed: PROVISIONING, desired RUNNING.
    pub fn placed() -> Self {
        TaskLifecycle {
            last: TaskStatus::Provisioning,
            desired: DesiredTaskStatus::Running,
            stop_code: None,
            stopped_reason: None,
        }
    }
    /// The task's `lastStatus`.
    pub fn last(&self) -> TaskStatus {
        self.last
    }
    /// The task's `desiredStatus`.
    pub fn desired(&self) -> DesiredTaskStatus {
        self.desired
    }
    /// Why it was asked to stop or stopped, if it was.
    pub fn stop_code(&self) -> Option<StopCode> {
        self.stop_code
    }
    /// The human-readable reason it was asked to stop or stopped.
    pub fn stopped_reason(&self) -> Option<&str> {
        self.stopped_reason.as_deref()
    }
    /// Moves `lastStatus` forward; refuses a move backward or out of STOPPED. Moving to
    /// the status it is already in is a no-op, so that repeated reports are idempotent.
    pub fn advance(&mut self, next: TaskStatus) -> Result<(), IllegalTransition> {
        if next == self.last {
            return Ok(());
        }
        if !self.last.can_move_to(next) {
            return Err(IllegalTransition {
                kind: "task",
                from: self.last.as_str(),
                to: next.as_str(),
            });
        }
        self.last = next;
        if next == TaskStatus::Stopped {
            self.desired = DesiredTaskStatus::Stopped;
        }
        Ok(())
    }
    /// Asks the task to stop. The first reason given is kept, as in ECS: stopping a task
    /// twice does not overwrite why it was stopped. Returns whether this call changed
    /// the desired status.
    pub fn request_stop(&mut self, code: StopCode, reason: &str) -> bool {
        if self.desired == DesiredTaskStatus::Stopped {
            return false;
        }
        self.desired = DesiredTaskStatus::Stopped;
        self.stop_code = Some(code);
        self.stopped_reason = Some(reason.to_owned());
        true
    }
}

status_enum!(
    /// A container instance's `status`.
    ContainerInstanceStatus {
        /// Being registered.
        Registering = "REGISTERING",
        /// Registration failed.
        RegistrationFailed = "REGISTRATION_FAILED",
        /// Takes tasks.
        Active = "ACTIVE",
        /// Takes no new tasks; its service tasks are being replaced.
        Draining = "DRAINING",
        /// Being deregistered.
        Deregistering = "DEREGISTERING",
        /// Deregistered.
        Inactive = "INACTIVE",
    }
);

impl ContainerInstanceStatus {
    /// ACTIVE and DRAINING switch back and forth (UpdateContainerInstancesState); an
    /// instance can be deregistered from any live state; INACTIVE is final.
    pub fn can_move_to(self, next: ContainerInstanceStatus) -> bool {
        use ContainerInstanceStatus::*;
        matches!(
            (self, next),
            (Registering, Active | RegistrationFailed)
                | (Active, Draining | Deregistering | Inactive)
                | (Draining, Active | Deregistering | Inactive)
                | (Deregistering, Inactive)
        )
    }
}

status_enum!(
    /// A task definition revision's `status`.
    TaskDefinitionStatus {
        /// Usable.
        Active = "ACTIVE",
        /// Deregistered: existing tasks and services keep it, new ones cannot use it.
        Inactive = "INACTIVE",
        /// DeleteTaskDefinitions was called.
        DeleteInProgress = "DELETE_IN_PROGRESS",
    }
);

impl TaskDefinitionStatus {
    /// ACTIVE → INACTIVE → DELETE_IN_PROGRESS; only an INACTIVE revision may be deleted.
    pub fn can_move_to(self, next: TaskDefinitionStatus) -> bool {
        use TaskDefinitionStatus::*;
        matches!(
            (self, next),
            (Active, Inactive) | (Inactive, DeleteInProgress)
        )
    }
}

status_enum!(
    /// A cluster's `status`.
    ClusterStatus {
        /// Usable.
        Active = "ACTIVE",
        /// Capacity providers are being set up.
        Provisioning = "PROVISIONING",
        /// Being torn down.
        Deprovisioning = "DEPROVISIONING",
        /// Set-up failed.
        Failed = "FAILED",
        /// Deleted.
        Inactive = "INACTIVE",
    }
);

impl ClusterStatus {
    /// A deleted (INACTIVE) cluster never comes back; creating one with the same name
    /// makes a new cluster.
    pub fn can_move_to(self, next: ClusterStatus) -> bool {
        use ClusterStatus::*;
        matches!(
            (self, next),
            (Provisioning, Active | Failed)
                | (Active, Deprovisioning | Inactive)
                | (Deprovisioning, Inactive)
                | (Failed, Inactive)
        )
    }
}

status_enum!(
    /// A capacity provider's `status`.
    CapacityProviderStatus {
        /// Usable.
        Active = "ACTIVE",
        /// Deleted.
        Inactive = "INACTIVE",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_only_move_forward() {
        for &from in TaskStatus::ALL {
            for &to in TaskStatus::ALL {
                assert_eq!(from.can_move_to(to), to > from, "{from} -> {to}");
            }
        }
        assert!(!TaskStatus::Stopped.can_move_to(TaskStatus::Running));
    }

    #[test]
    fn lifecycle_refuses_going_back_and_keeps_first_stop_reason() {
        let mut task = TaskLifecycle::placed();
        task.advance(TaskStatus::Pending).unwrap();
        task.advance(TaskStatus::Running).unwrap();
        task.advance(TaskStatus::Running).unwrap();
        assert!(task.advance(TaskStatus::Pending).is_err());
        assert!(task.request_stop(StopCode::UserInitiated, "first"));
        assert!(!task.request_stop(StopCode::ServiceSchedulerInitiated, "second"));
        assert_eq!(task.stopped_reason(), Some("first"));
        assert_eq!(task.stop_code(), Some(StopCode::UserInitiated));
        task.advance(TaskStatus::Stopped).unwrap();
        assert_eq!(task.desired(), DesiredTaskStatus::Stopped);
        let err = task.advance(TaskStatus::Running).unwrap_err();
        assert_eq!(err.from, "STOPPED");
    }

    #[test]
    fn reaching_stopped_sets_desired_stopped() {
        let mut task = TaskLifecycle::placed();
        task.advance(TaskStatus::Stopped).unwrap();
        assert_eq!(task.desired(), DesiredTaskStatus::Stopped);
    }

    #[test]
    fn spellings_round_trip() {
        for &s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        for &s in ContainerInstanceStatus::ALL {
            assert_eq!(ContainerInstanceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            TaskDefinitionStatus::parse("DELETE_IN_PROGRESS"),
            Some(TaskDefinitionStatus::DeleteInProgress)
        );
        assert_eq!(TaskStatus::parse("running"), None);
    }

    #[test]
    fn instance_and_definition_moves() {
        use ContainerInstanceStatus::*;
        assert!(Active.can_move_to(Draining));
        assert!(Draining.can_move_to(Active));
        assert!(!Inactive.can_move_to(Active));
        assert!(TaskDefinitionStatus::Active.can_move_to(TaskDefinitionStatus::Inactive));
        assert!(!TaskDefinitionStatus::Active.can_move_to(TaskDefinitionStatus::DeleteInProgress));
        assert!(!ClusterStatus::Inactive.can_move_to(ClusterStatus::Active));
    }

    proptest::proptest! {
        #[test]
        fn no_sequence_of_moves_leaves_stopped(moves in proptest::collection::vec(0usize..8, 0..20)) {
            let mut task = TaskLifecycle::placed();
            let mut seen_stopped = false;
            for m in moves {
                let _ = task.advance(TaskStatus::ALL[m]);
                if seen_stopped {
                    proptest::prop_assert_eq!(task.last(), TaskStatus::Stopped);
                }
                seen_stopped |= task.last() == TaskStatus::Stopped;
            }
        }
    }
}
