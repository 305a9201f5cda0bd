//! What a change did to an entry, for its history (`sqsbeat entries
//! history`): the fields that changed, before and after, as JSON. Pure;
//! the store writes it beside the change, in the same transaction.

use serde_json::{Map, Value, json};

use crate::store::entries::EntryRow;

/// The fields of a row that are set (not null), by name.
fn fields(row: &EntryRow) -> Map<String, Value> {
    match serde_json::to_value(row) {
        Ok(Value::Object(m)) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

/// The change from `before` to `after` (either may be absent: an added or
/// a removed row): `{"before": {...}, "after": {...}}` holding only the
/// fields that differ; an absent side is left out.
pub fn row_change(before: Option<&EntryRow>, after: Option<&EntryRow>) -> Value {
    let (b, a) = (
        before.map(fields).unwrap_or_default(),
        after.map(fields).unwrap_or_default(),
    );
    let mut out_b = Map::new();
    let mut out_a = Map::new();
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for k in keys {
        let (vb, va) = (b.get(k), a.get(k));
        if vb != va {
            out_b.insert(k.clone(), vb.cloned().unwrap_or(Value::Null));
            out_a.insert(k.clone(), va.cloned().unwrap_or(Value::Null));
        }
    }
    let mut out = Map::new();
    if before.is_some() {
        out.insert("before".into(), Value::Object(out_b));
    }
    if after.is_some() {
        out.insert("after".into(), Value::Object(out_a));
    }
    Value::Object(out)
}

/// One field changing from `before` to `after`.
pub fn field_change(field: &str, before: Value, after: Value) -> Value {
    json!({"before": {field: before}, "after": {field: after}})
}

/// A detail as one line for a person: `field: before -> after` for each
/// changed field, else the detail's own fields as `key=value`.
pub fn describe(detail: &Value) -> String {
    let (before, after) = (detail.get("before"), detail.get("after"));
    if before.is_none() && after.is_none() {
        return match detail {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
    }
    let empty = Map::new();
    let side = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => m.clone(),
        _ => empty.clone(),
    };
    let (b, a) = (side(before), side(after));
    let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .map(|k| match (b.get(k), a.get(k)) {
            (Some(x), Some(y)) => format!("{k}: {x} -> {y}"),
            (None, Some(y)) => format!("{k}: {y}"),
            (Some(x), None) => format!("{k}: {x} (removed)"),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> EntryRow {
        EntryRow {
            name: "nightly".into(),
            task: "app.report".into(),
            cron: Some("0 3 * * *".into()),
            args: json!([]),
            kwargs: json!({"a": 1}),
            headers: json!({}),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_replace_records_only_the_fields_that_changed() {
        let mut after = row();
        after.cron = Some("0 4 * * *".into());
        after.kwargs = json!({"a": 2});
        after.queue = Some("reports".into());
        let c = row_change(Some(&row()), Some(&after));
        assert_eq!(
            c,
            json!({
                "before": {"cron": "0 3 * * *", "kwargs": {"a": 1}, "queue": null},
                "after": {"cron": "0 4 * * *", "kwargs": {"a": 2}, "queue": "reports"}
            })
        );
        assert_eq!(
            describe(&c),
            r#"cron: "0 3 * * *" -> "0 4 * * *"; kwargs: {"a":1} -> {"a":2}; queue: null -> "reports""#
        );
        assert_eq!(
            row_change(Some(&row()), Some(&row())),
            json!({"before": {}, "after": {}})
        );
    }

    #[test]
    fn an_add_records_every_set_field_and_a_remove_the_row_it_removed() {
        let added = row_change(None, Some(&row()));
        assert_eq!(added.get("before"), None);
        assert_eq!(added["after"]["cron"], "0 3 * * *");
        assert_eq!(added["after"]["name"], "nightly");
        assert_eq!(
            added["after"].get("queue"),
            None,
            "unset fields are left out"
        );
        let removed = row_change(Some(&row()), None);
        assert_eq!(removed["before"]["task"], "app.report");
        assert_eq!(removed.get("after"), None);
        assert_eq!(
            describe(&field_change("enabled", json!(true), json!(false))),
            "enabled: true -> false"
        );
        assert_eq!(
            describe(&json!({"task_id": "x", "queue": "celery"})),
            r#"task_id="x" queue="celery""#
        );
    }
}
