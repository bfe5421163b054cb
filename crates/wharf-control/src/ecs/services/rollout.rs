//! The rolling-update arithmetic of a REPLICA service, as a pure function.
//!
//! Given the service's live tasks (each marked new or old, healthy or not, and whether
//! it must go), [`plan_replica`] says how many tasks to start and which to stop, such
//! that:
//! - the tasks kept plus the tasks started never exceed `maximumPercent` of the desired
//!   count (rounded down) — unless there were already more, in which case nothing starts;
//! - stopping never takes the healthy tasks below `minimumHealthyPercent` of the desired
//!   count (rounded up) — except tasks that must go anyway (they failed their health
//!   checks or sit on a lost instance; they count as unhealthy);
//! - new tasks converge to the desired count and old ones to zero.

use std::collections::BTreeMap;

/// Why a task must be replaced whatever the counts say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doom {
    /// An essential container failed its health check.
    ContainerUnhealthy,
    /// Its load balancer target is unhealthy.
    TargetUnhealthy,
    /// Its instance's agent has been gone too long, or the instance is gone.
    InstanceLost,
}

/// One live task, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanTask {
    pub id: String,
    /// Started by the PRIMARY deployment and not on a draining instance.
    pub new: bool,
    /// RUNNING, and healthy by its health checks and its load balancer targets.
    pub healthy: bool,
    pub doom: Option<Doom>,
    pub instance: String,
    pub created_at: i64,
}

/// What a service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanLimits {
    pub desired: i64,
    pub maximum_percent: i64,
    pub minimum_healthy_percent: i64,
    /// No new task may start (the deployment failed, or the service backs off).
    pub hold_starts: bool,
    /// The PRIMARY deployment failed and is not rolled back: old tasks stay.
    pub keep_old: bool,
}

/// Why the plan stops a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopWhy {
    Doomed(Doom),
    /// More new tasks than desired.
    ScaleDown,
    /// Replaced by the PRIMARY deployment.
    Replaced,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub start: usize,
    pub stop: Vec<(String, StopWhy)>,
}

impl PlanLimits {
    /// The most tasks allowed at once.
    pub fn max_total(&self) -> i64 {
        (self.desired.max(0) * self.maximum_percent.max(0)) / 100
    }
    /// The fewest healthy tasks allowed.
    pub fn min_healthy(&self) -> i64 {
        (self.desired.max(0) * self.minimum_healthy_percent.max(0) + 99) / 100
    }
}

/// Plans one step of a REPLICA service.
pub(crate) fn plan_replica(limits: &PlanLimits, tasks: &[PlanTask]) -> Plan {
    let mut plan = Plan::default();
    // Tasks that must go are stopped at once: they do not count as healthy, so stopping
    // them never lowers the healthy count.
    let mut kept: Vec<&PlanTask> = Vec::new();
    for task in tasks {
        match task.doom {
            Some(doom) => plan.stop.push((task.id.clone(), StopWhy::Doomed(doom))),
            None => kept.push(task),
        }
    }
    let mut healthy = kept.iter().filter(|t| t.healthy).count() as i64;
    let min_healthy = limits.min_healthy();

    // Too many new tasks: stop the least useful extras (not yet healthy first, then
    // from the most crowded instance, newest first).
    let mut new: Vec<&PlanTask> = kept.iter().copied().filter(|t| t.new).collect();
    let excess = new.len() as i64 - limits.desired.max(0);
    if excess > 0 {
        let mut crowding: BTreeMap<&str, usize> = BTreeMap::new();
        for task in &new {
            *crowding.entry(task.instance.as_str()).or_default() += 1;
        }
        let mut stopped = Vec::new();
        for _ in 0..excess {
            let pick = new
                .iter()
                .enumerate()
                .max_by_key(|(_, t)| {
                    (
                        !t.healthy,
                        crowding.get(t.instance.as_str()).copied().unwrap_or(0),
                        t.created_at,
                    )
                })
                .map(|(i, _)| i);
            let Some(index) = pick else { break };
            let task = new.remove(index);
            if let Some(count) = crowding.get_mut(task.instance.as_str()) {
                *count -= 1;
            }
            if task.healthy {
                healthy -= 1;
            }
            stopped.push(task);
        }
        for task in stopped {
            plan.stop.push((task.id.clone(), StopWhy::ScaleDown));
        }
    }

    // Old tasks: those not yet healthy go at once; healthy ones as far as the minimum
    // healthy count allows, oldest first.
    let mut old: Vec<&PlanTask> = kept.iter().copied().filter(|t| !t.new).collect();
    let mut old_kept = old.len() as i64;
    if !limits.keep_old {
        old.sort_by_key(|t| (t.healthy, t.created_at));
        for task in old {
            if task.healthy {
                if healthy - 1 < min_healthy {
                    break;
                }
                healthy -= 1;
            }
            old_kept -= 1;
            plan.stop.push((task.id.clone(), StopWhy::Replaced));
        }
    }

    // Starts: up to the desired count of new tasks, within the maximum.
    if !limits.hold_starts {
        let total = new.len() as i64 + old_kept;
        let room = limits.max_total() - total;
        let wanted = limits.desired.max(0) - new.len() as i64;
        plan.start = wanted.min(room).max(0) as usize;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(id: &str, new: bool, healthy: bool) -> PlanTask {
        PlanTask {
            id: id.to_owned(),
            new,
            healthy,
            doom: None,
            instance: "i-1".to_owned(),
            created_at: 0,
        }
    }

    fn limits(desired: i64, max: i64, min: i64) -> PlanLimits {
        PlanLimits {
            desired,
            maximum_percent: max,
            minimum_healthy_percent: min,
            hold_starts: false,
            keep_old: false,
        }
    }

    #[test]
    fn a_fresh_service_starts_its_desired_count() {
        let plan = plan_replica(&limits(3, 200, 100), &[]);
        assert_eq!(plan.start, 3);
        assert!(plan.stop.is_empty());
    }

    #[test]
    fn rolling_with_200_100_starts_all_new_before_stopping_old() {
        let old = [task("o1", false, true), task("o2", false, true)];
        let plan = plan_replica(&limits(2, 200, 100), &old);
        assert_eq!(plan.start, 2);
        assert!(plan.stop.is_empty());
        // Once the new ones are healthy, the old ones go.
        let mut all = old.to_vec();
        all.extend([task("n1", true, true), task("n2", true, true)]);
        let plan = plan_replica(&limits(2, 200, 100), &all);
        assert_eq!(plan.start, 0);
        assert_eq!(
            plan.stop,
            vec![
                ("o1".to_owned(), StopWhy::Replaced),
                ("o2".to_owned(), StopWhy::Replaced)
            ]
        );
    }

    #[test]
    fn rolling_with_100_50_stops_half_first() {
        let old: Vec<PlanTask> = (0..4)
            .map(|i| task(&format!("o{i}"), false, true))
            .collect();
        let plan = plan_replica(&limits(4, 100, 50), &old);
        assert_eq!(plan.stop.len(), 2);
        assert_eq!(plan.start, 2);
    }

    #[test]
    fn scale_down_stops_pending_first() {
        let tasks = [
            task("a", true, true),
            task("b", true, false),
            task("c", true, true),
        ];
        let plan = plan_replica(&limits(2, 200, 100), &tasks);
        assert_eq!(plan.stop, vec![("b".to_owned(), StopWhy::ScaleDown)]);
        assert_eq!(plan.start, 0);
    }

    #[test]
    fn doomed_tasks_stop_and_are_replaced() {
        let mut sick = task("a", true, false);
        sick.doom = Some(Doom::ContainerUnhealthy);
        let plan = plan_replica(&limits(1, 200, 100), &[sick]);
        assert_eq!(
            plan.stop,
            vec![("a".to_owned(), StopWhy::Doomed(Doom::ContainerUnhealthy))]
        );
        assert_eq!(plan.start, 1);
    }

    #[test]
    fn a_failed_deployment_keeps_old_tasks_and_starts_nothing() {
        let tasks = [task("o", false, true), task("n", true, false)];
        let mut l = limits(1, 200, 100);
        l.hold_starts = true;
        l.keep_old = true;
        let plan = plan_replica(&l, &tasks);
        assert_eq!(plan, Plan::default());
    }

    fn arb_task() -> impl Strategy<Value = PlanTask> {
        (
            any::<bool>(),
            any::<bool>(),
            prop::option::of(Just(Doom::InstanceLost)),
            0..3usize,
            0..100i64,
        )
            .prop_map(|(new, healthy, doom, instance, created_at)| PlanTask {
                id: String::new(),
                new,
                healthy,
                doom,
                instance: format!("i-{instance}"),
                created_at,
            })
    }

    proptest! {
        /// The safety rules: never above the maximum because of a start, never below
        /// the minimum healthy count because of a stop of a task that did not have to
        /// go, and always moving towards the desired count.
        #[test]
        fn plans_respect_minimum_healthy_and_maximum(
            desired in 0..12i64,
            max in 100..=200i64,
            min in 0..=100i64,
            mut tasks in prop::collection::vec(arb_task(), 0..16),
        ) {
            for (i, t) in tasks.iter_mut().enumerate() {
                t.id = format!("t{i}");
            }
            let l = limits(desired, max, min);
            let plan = plan_replica(&l, &tasks);
            let stopped: std::collections::BTreeSet<&str> =
                plan.stop.iter().map(|(id, _)| id.as_str()).collect();
            let kept: Vec<&PlanTask> =
                tasks.iter().filter(|t| !stopped.contains(t.id.as_str())).collect();
            let healthy_before = tasks.iter().filter(|t| t.healthy && t.doom.is_none()).count() as i64;
            let healthy_after = kept.iter().filter(|t| t.healthy).count() as i64;
            // Stopping healthy tasks never goes below the minimum (unless already below).
            prop_assert!(healthy_after >= l.min_healthy().min(healthy_before)
                || kept.iter().filter(|t| t.new).count() as i64 >= desired,
                "healthy {healthy_before} -> {healthy_after}, min {}", l.min_healthy());
            // Starting never exceeds the maximum.
            if plan.start > 0 {
                prop_assert!(kept.len() as i64 + plan.start as i64 <= l.max_total());
            }
            // Kept new tasks never exceed the desired count.
            prop_assert!(kept.iter().filter(|t| t.new).count() as i64 <= desired.max(0)
                || plan.stop.is_empty());
            // Every doomed task is stopped.
            for t in tasks.iter().filter(|t| t.doom.is_some()) {
                prop_assert!(stopped.contains(t.id.as_str()));
            }
        }
    }
}
