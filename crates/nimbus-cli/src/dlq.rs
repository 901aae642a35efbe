//! `nimbus dlq`: the dead-letter store of asynchronous invocations that
//! failed for good (`GET /_nimbus/dlq`, `POST /_nimbus/dlq/replay`,
//! nimbus's own API, SigV4-signed for service `nimbus`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::usage::signed_request;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters: events whose retries ran out, that got too old,
    /// or that a recursive loop stopped. A destination or dead-letter
    /// target `arn:aws:sqs:REGION:ACCOUNT:NAME` names queue NAME; events
    /// without a failure destination are in queue `default`.
    List(ListArgs),
    /// Queue dead letters again as new asynchronous invocations (new
    /// request IDs, retries counted afresh); they leave the store.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only this queue.
    #[arg(long, value_name = "NAME")]
    queue: Option<String>,
    /// Print the server's JSON answer (payloads and destination records
    /// included) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Dead letter ids (the ID column of `nimbus dlq list`).
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    ids: Vec<i64>,
    /// Every dead letter (of --queue, if given).
    #[arg(long)]
    all: bool,
    /// With --all: only this queue.
    #[arg(long, value_name = "NAME", requires = "all")]
    queue: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn dlq(cmd: DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List(a) => {
            let query = match &a.queue {
                Some(q) => format!("queue={}", nimbus_auth::uri_encode(q, false)),
                None => String::new(),
            };
            let v = signed_request(&a.conn, "GET", "/_nimbus/dlq", &query, b"").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", table(&v));
            }
        }
        DlqCommand::Replay(a) => {
            let body = if a.all {
                json!({"all": true, "queue": a.queue})
            } else {
                json!({"ids": a.ids})
            };
            let v = signed_request(
                &a.conn,
                "POST",
                "/_nimbus/dlq/replay",
                "",
                body.to_string().as_bytes(),
            )
            .await?;
            let replayed = v["replayed"].as_array().cloned().unwrap_or_default();
            for r in &replayed {
                println!(
                    "replayed {} as request {}",
                    r["id"],
                    r["requestId"].as_str().unwrap_or_default()
                );
            }
            if !a.all && replayed.len() < a.ids.len() {
                bail!(
                    "{} of {} dead letters were not found",
                    a.ids.len() - replayed.len(),
                    a.ids.len()
                );
            }
            println!("{} replayed", replayed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(v: &Value) -> String {
    let letters = v["deadLetters"].as_array().cloned().unwrap_or_default();
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut out = format!(
        "{:<6} {:<10} {:<24} {:<36} {:<24} {}\n",
        "ID", "QUEUE", "FUNCTION", "REQUEST ID", "CONDITION", "REASON"
    );
    for d in letters {
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        let mut function = s("functionName");
        if let Some(q) = d["qualifier"].as_str() {
            function = format!("{function}:{q}");
        }
        out.push_str(&format!(
            "{:<6} {:<10} {:<24} {:<36} {:<24} {}\n",
            d["id"],
            s("queue"),
            function,
            s("requestId"),
            s("condition"),
            s("reason")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_dead_letter() {
        let v = json!({"deadLetters": [{
            "id": 7, "queue": "default", "functionName": "f", "qualifier": null,
            "requestId": "r-1", "condition": "RetriesExhausted", "reason": "boom"
        }]});
        let t = table(&v);
        assert!(t.starts_with("ID"));
        assert!(t.lines().nth(1).unwrap().starts_with("7 "));
        assert!(t.contains("RetriesExhausted"));
        assert_eq!(table(&json!({"deadLetters": []})), "no dead letters\n");
    }
}
