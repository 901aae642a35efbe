//! `nimbus trigger list NAME`: every event source wired to a function (S3
//! bucket notifications, EventBridge rules, Scheduler schedules), from the
//! server's `GET /_nimbus/triggers` (signed for service `nimbus`).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::client::Connection;
use crate::usage::signed_request;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TriggerCommand {
    /// List the event sources that invoke a function: bucket notifications
    /// (with their events and key filters), EventBridge rules and Scheduler
    /// schedules (with their expressions and state).
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// The function's name or ARN.
    name: String,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn trigger(cmd: TriggerCommand) -> Result<ExitCode> {
    let TriggerCommand::List(a) = cmd;
    let query = format!("function={}", nimbus_auth::uri_encode(&a.name, false));
    let v = signed_request(&a.conn, "GET", "/_nimbus/triggers", &query, b"").await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", table(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(v: &Value) -> String {
    let triggers = v["triggers"].as_array().cloned().unwrap_or_default();
    let function = v["functionArn"].as_str().unwrap_or_default();
    if triggers.is_empty() {
        return format!("no triggers invoke {function}\n");
    }
    let text = |t: &Value, k: &str| t[k].as_str().unwrap_or_default().to_string();
    let rows: Vec<[String; 5]> = triggers
        .iter()
        .map(|t| {
            let state = if t["enabled"].as_bool().unwrap_or(true) {
                "ENABLED"
            } else {
                "DISABLED"
            };
            let target = text(t, "target");
            // Only a qualifier is worth showing: the function is the same.
            let qualifier = target
                .strip_prefix(function)
                .and_then(|q| q.strip_prefix(':'))
                .unwrap_or("")
                .to_string();
            [
                text(t, "service"),
                text(t, "source"),
                text(t, "detail"),
                state.to_string(),
                if qualifier.is_empty() {
                    "-".into()
                } else {
                    qualifier
                },
            ]
        })
        .collect();
    let header = [
        "SERVICE",
        "SOURCE",
        "EVENTS / SCHEDULE",
        "STATE",
        "QUALIFIER",
    ];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i == 4 {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_lists_each_source_with_its_qualifier() {
        let f = "arn:aws:lambda:us-east-1:000000000000:function:thumb";
        let v = json!({"functionArn": f, "triggers": [
            {"service": "s3", "source": "arn:aws:s3:::photos", "detail": "s3:ObjectCreated:* suffix=.jpg",
             "enabled": true, "target": f},
            {"service": "events", "source": "arn:aws:events:us-east-1:000000000000:rule/nightly",
             "detail": "cron(0 3 * * ? *)", "enabled": false, "target": format!("{f}:prod")},
        ]});
        let t = table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("s3 ")
                && lines[1].contains("suffix=.jpg")
                && lines[1].ends_with(" -"),
            "{t}"
        );
        assert!(
            lines[2].contains("cron(0 3 * * ? *)")
                && lines[2].contains("DISABLED")
                && lines[2].ends_with("prod"),
            "{t}"
        );
        assert_eq!(
            table(&json!({"functionArn": f, "triggers": []})),
            format!("no triggers invoke {f}\n")
        );
    }
}
