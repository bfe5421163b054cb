//! Placement throughput: 1,000 tasks on 5,000 instances (ECS's per-cluster limit),
//! with the service default (spread by zone, then instance) plus binpack on memory,
//! against a plain random placement of the same tasks as the baseline measured in the
//! same run; each both on the plain snapshot ([`place_tasks`]) and on an
//! [`IndexedSnapshot`] of it. One call of 1,000 tasks is dominated by choosing among
//! the candidates for each task, which both share, so the two differ little here; the
//! index pays off on many small calls (see the `run_task` bench).
//!
//! Measured on the 2-core development VM (criterion medians, load about 3): spread +
//! binpack 17.2 ms plain and 15.0 ms indexed (21.3 ms before the survey and the
//! one-pass narrowing), random 0.12 ms plain and 0.10 ms indexed (0.93 ms before,
//! when every task copied the whole candidate list first).
//!
//! `cargo bench -p wharf-scheduler --bench place`

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use wharf_scheduler::{
    place_tasks, BinpackField, ClusterSnapshot, IndexedSnapshot, InstanceSnapshot, InstanceStatus,
    PlacementPlan, PlacementRequest, PlacementStrategy, Resources,
};

const INSTANCES: usize = 5_000;
const TASKS: usize = 1_000;

fn cluster() -> ClusterSnapshot {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let instances = (0..INSTANCES)
        .map(|index| {
            let resources = Resources {
                cpu: 2048 + (index % 4) as i64 * 1024,
                memory_mib: 4096 + (index % 7) as i64 * 512,
                tcp_ports: BTreeSet::from([22, 2375, 2376, 51678, 51679]),
                udp_ports: BTreeSet::new(),
            };
            InstanceSnapshot {
                id: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/bench/{index}"),
                ec2_instance_id: format!("i-{index:08x}"),
                status: InstanceStatus::Active,
                agent_connected: true,
                agent_version: "1.80.0".to_owned(),
                registered_at_ms: 1_700_000_000_000,
                attributes: BTreeMap::from([
                    (
                        "ecs.availability-zone".to_owned(),
                        Some(zones[index % zones.len()].to_owned()),
                    ),
                    ("ecs.instance-type".to_owned(), Some("m5.large".to_owned())),
                ]),
                registered: resources.clone(),
                remaining: resources,
                running_tasks_count: 0,
                tasks: Vec::new(),
                group_counts: Default::default(),
            }
        })
        .collect();
    ClusterSnapshot { instances }
}

fn request(strategies: Vec<PlacementStrategy>) -> PlacementRequest {
    PlacementRequest {
        count: TASKS,
        group: "service:api".to_owned(),
        family: "api".to_owned(),
        cpu: 256,
        memory_mib: 512,
        strategies,
        seed: 42,
        ..PlacementRequest::default()
    }
}

fn spread_and_binpack() -> Vec<PlacementStrategy> {
    let mut strategies = PlacementStrategy::service_default();
    strategies.push(PlacementStrategy::Binpack(BinpackField::Memory));
    strategies
}

/// One timed run outside criterion, so the figure is printed plainly.
fn print_figure(name: &str, place: impl Fn() -> PlacementPlan) {
    let started = Instant::now();
    let plan = place();
    let elapsed = started.elapsed();
    println!(
        "{name}: placed {} of {TASKS} tasks on {INSTANCES} instances in {:.1} ms ({:.0} tasks/s)",
        plan.placed_count(),
        elapsed.as_secs_f64() * 1e3,
        TASKS as f64 / elapsed.as_secs_f64()
    );
}

fn bench_place(c: &mut Criterion) {
    let snapshot = cluster();
    let indexed = IndexedSnapshot::new(snapshot.clone());
    let spread = request(spread_and_binpack());
    let random = request(vec![PlacementStrategy::Random]);
    print_figure("spread(zone)+spread(instanceId)+binpack(memory)", || {
        place_tasks(&snapshot, &spread)
    });
    print_figure("baseline random", || place_tasks(&snapshot, &random));
    print_figure(
        "indexed: spread(zone)+spread(instanceId)+binpack(memory)",
        || indexed.place_tasks(&spread),
    );
    print_figure("indexed: baseline random", || indexed.place_tasks(&random));

    let mut group = c.benchmark_group("place_1000_tasks_on_5000_instances");
    group.sample_size(10);
    group.bench_function("spread_zone_instance_binpack_memory", |b| {
        b.iter(|| place_tasks(black_box(&snapshot), black_box(&spread)))
    });
    group.bench_function("baseline_random", |b| {
        b.iter(|| place_tasks(black_box(&snapshot), black_box(&random)))
    });
    group.bench_function("indexed_spread_zone_instance_binpack_memory", |b| {
        b.iter(|| black_box(&indexed).place_tasks(black_box(&spread)))
    });
    group.bench_function("indexed_baseline_random", |b| {
        b.iter(|| black_box(&indexed).place_tasks(black_box(&random)))
    });
    group.finish();
}

criterion_group!(benches, bench_place);
criterion_main!(benches);
