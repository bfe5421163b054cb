//! A static configuration: a JSON file of load balancer records, for running the data
//! plane without a control plane (`wharf lb --config routes.json`).
//!
//! The file is one JSON object mapping store keys to records, exactly as the ELBv2 API
//! stores them (see [`crate::records`]):
//!
//! ```json
//! {
//!   "elbv2/us-east-1/lb/web": { "arn": "…", "name": "web", … },
//!   "elbv2/us-east-1/listener/web/l1": { "arn": "…", "port": 8080, … },
//!   "elbv2/us-east-1/tg/app": { … },
//!   "elbv2/us-east-1/target/app/10.0.0.5:80": { "id": "10.0.0.5", "port": 80, "address": "10.0.0.5:80", … }
//! }
//! ```
//!
//! Every record is checked against the type its key calls for before anything is
//! served.

use serde_json::Value;
use wharf_store::{Revision, Store, StoreError, Txn};

use crate::routing::{ElbRecords, RecordError};

/// Why a static configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    /// Not a JSON object.
    #[error("the configuration is not a JSON object of records: {0}")]
    NotAnObject(String),
    /// A record is wrong.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses and checks a configuration; returns each record's key and JSON value.
pub fn parse(json: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StaticConfigError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| StaticConfigError::NotAnObject(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(StaticConfigError::NotAnObject(
            "the top level is not an object".into(),
        ));
    };
    let mut records = ElbRecords::default();
    let mut entries = Vec::with_capacity(map.len());
    for (key, record) in map {
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| StaticConfigError::NotAnObject(e.to_string()))?;
        records.insert(&key, &bytes)?;
        entries.push((key, bytes));
    }
    Ok(entries)
}

/// Writes the records into a store in one transaction; returns its revision.
pub async fn load_into(
    store: &dyn Store,
    entries: Vec<(String, Vec<u8>)>,
) -> Result<Revision, StaticConfigError> {
    let mut txn = Txn::new();
    for (key, value) in entries {
        txn = txn.put(key, value);
    }
    Ok(store.txn(txn).await?.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_record_of_the_wrong_shape_naming_its_key() {
        let error = parse(br#"{"elbv2/us-east-1/tg/app": {"name": 3}}"#).unwrap_err();
        assert!(
            error.to_string().contains("elbv2/us-east-1/tg/app"),
            "{error}"
        );
        let error = parse(br#"{"other/key": {}}"#).unwrap_err();
        assert!(error.to_string().contains("other/key"), "{error}");
        assert!(parse(b"[]").is_err());
    }

    #[test]
    fn accepts_records_of_the_right_shape() {
        let entries = parse(
            br#"{"elbv2/us-east-1/target/app/10.0.0.5:80":
                {"id":"10.0.0.5","port":80,"address":"10.0.0.5:80",
                 "availabilityZone":null,"registeredMs":0,"drainUntilMs":null}}"#,
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "elbv2/us-east-1/target/app/10.0.0.5:80");
    }
}
