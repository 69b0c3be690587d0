//! Network configs as typed structs: the keys every plugin reads (`NetConf`, flattened into
//! each plugin's own struct) and the one parse that refuses a value of the wrong type with
//! code 7 naming its key, as the reference plugins refuse it. Unknown keys are ignored and
//! a key set to null counts as absent, as Go's decoder has it.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::result::NetResult;

/// The common CNI keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The plugin's name, which the runtime ran it by.
    #[serde(rename = "type", default)]
    pub plugin: String,
    /// Kept as JSON until read: a malformed one is a result that fails to decode (code 6),
    /// and DEL goes on without it.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC's attachments still in use (CNI 1.1).
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The same under its pre-release name.
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

/// One attachment GC must keep.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// The `prevResult`, if any.
    pub fn prev_result(&self) -> CniResult<Option<NetResult>> {
        self.prev_result.as_ref().map(NetResult::from_json).transpose()
    }

    /// GC's valid attachments as (container id, interface).
    pub fn valid_attachments(&self) -> Vec<(String, String)> {
        let listed = self.valid_attachments.as_ref().or(self.attachments.as_ref());
        listed.into_iter().flatten().map(|a| (a.container_id.clone(), a.ifname.clone())).collect()
    }
}

/// Go's decoder leaves a field alone when its key is null; serde would refuse null for a
/// bool or a number, so null keys are dropped first.
fn without_nulls(json: &Value) -> Value {
    match json {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Whether some key of `json`, at any depth, is null: what `without_nulls` would drop.
fn has_null_keys(json: &Value) -> bool {
    match json {
        Value::Object(map) => map.values().any(|v| v.is_null() || has_null_keys(v)),
        Value::Array(items) => items.iter().any(has_null_keys),
        _ => false,
    }
}

/// Reads `json` as `T`; a value of the wrong type is refused with code 7 naming its key,
/// e.g. `invalid network config: "mtu": invalid type: string "1500", expected u32`.
pub fn parse<T: DeserializeOwned>(json: &Value) -> CniResult<T> {
    // Copied only when it has a null key: a config carries its prevResult and every port
    // mapping, read once per plugin struct (a copy cost a third of an ADD of 1000 ports).
    let cleaned;
    let json = if has_null_keys(json) {
        cleaned = without_nulls(json);
        &cleaned
    } else {
        json
    };
    serde_path_to_error::deserialize(json).map_err(|e| {
        // serde hands a flattened struct its keys from a buffer that has lost their path,
        // so an error without a path is looked for again in the common keys alone.
        if e.path().iter().next().is_none() {
            if let Err(keyed) = serde_path_to_error::deserialize::<_, NetConf>(json) {
                return invalid(keyed);
            }
        }
        invalid(e)
    })
}

fn invalid(e: serde_path_to_error::Error<serde_json::Error>) -> CniError {
    if e.path().iter().next().is_none() {
        CniError::new(INVALID_CONFIG, format!("invalid network config: {}", e.inner()))
    } else {
        CniError::new(INVALID_CONFIG, format!("invalid network config: \"{}\": {}", e.path(), e.inner()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Keys {
        #[serde(flatten)]
        net: NetConf,
        #[serde(default)]
        flag: bool,
    }

    fn refusal(json: Value) -> String {
        let e = parse::<Keys>(&json).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_common_key_of_the_wrong_type_is_named_though_flattened() {
        assert_eq!(
            refusal(json!({ "name": 5 })),
            "invalid network config: \"name\": invalid type: integer `5`, expected a string"
        );
        assert!(refusal(json!({ "name": "n", "cniVersion": ["1.0.0"] }))
            .starts_with("invalid network config: \"cniVersion\": invalid type: sequence"));
        assert!(refusal(json!({ "name": "n", "cni.dev/valid-attachments": [{ "containerID": 1 }] }))
            .starts_with("invalid network config: \"cni.dev/valid-attachments[0].containerID\": "));
        assert!(refusal(json!({ "name": "n", "flag": "yes" }))
            .starts_with("invalid network config: \"flag\": invalid type: string \"yes\""));
        assert!(refusal(json!(["not", "an", "object"])).starts_with("invalid network config: invalid type: sequence"));
    }

    #[test]
    fn unknown_and_null_keys_are_ignored() {
        let keys: Keys = parse(&json!({ "cniVersion": "1.0.0", "name": "n", "type": "t", "someday": { "x": [1] }, "flag": null, "prevResult": null })).unwrap();
        assert_eq!(
            (keys.net.name.as_str(), keys.net.plugin.as_str(), keys.flag, keys.net.prev_result.is_none()),
            ("n", "t", false, true)
        );
    }

    #[test]
    fn gc_reads_either_attachment_key() {
        let current: NetConf =
            parse(&json!({ "name": "n", "cni.dev/valid-attachments": [{ "containerID": "a", "ifname": "eth0" }] }))
                .unwrap();
        assert_eq!(current.valid_attachments(), [("a".to_string(), "eth0".to_string())]);
        let older: NetConf =
            parse(&json!({ "name": "n", "cni.dev/attachments": [{ "containerID": "b", "ifname": "eth1" }] })).unwrap();
        assert_eq!(older.valid_attachments(), [("b".to_string(), "eth1".to_string())]);
    }
}
