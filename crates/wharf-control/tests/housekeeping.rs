//! Stopped tasks stay visible for an hour, then leave the API.

use std::sync::Arc;

use serde_json::{json, Value};
use wharf_aws::{AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_control::clock::ManualClock;
use wharf_control::records::Records;
use wharf_control::{EcsConfig, EcsService};
use wharf_store::sqlite::SqliteStore;

async fn call(service: &EcsService, op: &str, input: Value) -> Value {
    let ctx = CallContext {
        request_id: "r".into(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        account_id: "000000000000".into(),
    };
    match service.call(&ctx, op, ServiceInput::Json(input)).await {
        Ok(ServiceOutput::Json(value)) => value,
        other => panic!("{op}: {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_task_expires_an_hour_after_it_stopped() {
    let clock = Arc::new(ManualClock::at(1_800_000_000_000));
    let store = Arc::new(SqliteStore::open_in_memory().expect("store"));
    let service = EcsService::new(Records::new(store), clock.clone(), EcsConfig::default());
    call(&service, "CreateCluster", json!({})).await;
    call(
        &service,
        "RegisterContainerInstance",
        json!({"totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}]}),
    )
    .await;
    call(
        &service,
        "RegisterTaskDefinition",
        json!({"family": "t", "containerDefinitions": [{"name": "c", "image": "i", "memory": 8}]}),
    )
    .await;
    let arn = call(&service, "RunTask", json!({"taskDefinition": "t"})).await["tasks"][0]
        ["taskArn"]
        .as_str()
        .expect("a task")
        .to_owned();
    let running = call(&service, "RunTask", json!({"taskDefinition": "t"})).await["tasks"][0]
        ["taskArn"]
        .as_str()
        .expect("a task")
        .to_owned();
    // Never picked up by an agent, so it stops at once.
    call(&service, "StopTask", json!({"task": arn})).await;

    clock.advance(59 * 60 * 1000);
    assert_eq!(service.expire_stopped_tasks().await.expect("sweep"), 0);
    let described = call(&service, "DescribeTasks", json!({"tasks": [arn]})).await;
    assert_eq!(described["tasks"][0]["lastStatus"], "STOPPED");

    clock.advance(2 * 60 * 1000);
    assert_eq!(service.expire_stopped_tasks().await.expect("sweep"), 1);
    let described = call(&service, "DescribeTasks", json!({"tasks": [arn, running]})).await;
    assert_eq!(described["failures"][0]["reason"], "MISSING");
    assert_eq!(described["failures"][0]["arn"], arn.as_str());
    // The task that never stopped stays.
    assert_eq!(described["tasks"].as_array().map(Vec::len), Some(1));
}
