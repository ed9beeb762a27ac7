//! Exporting a run's outputs as JSON lines or CSV, streamed page by page so that a run of a
//! million outputs never sits in memory.

use std::collections::BTreeSet;

use futures::Stream;
use serde_json::Value;

use crate::model::Output;
use crate::store::MAX_PAGE;
use crate::{Monitor, Result};

/// Outputs read per page while exporting.
const EXPORT_PAGE: u32 = MAX_PAGE * 4;

/// The run's outputs as a stream of text chunks: JSON lines, or CSV with the columns `job`,
/// `attempt`, `at_ms` and the union of the outputs' top-level fields.
pub(crate) async fn outputs(
    monitor: Monitor,
    run_id: String,
    csv: bool,
) -> Result<impl Stream<Item = Vec<u8>>> {
    // Fails here, before any byte is sent, when the run does not exist.
    let first = monitor.store().outputs(&run_id, None, EXPORT_PAGE).await?;
    let fields = if csv {
        Some(output_fields(&monitor, &run_id).await?)
    } else {
        None
    };
    let header = fields.as_ref().map(|fields| {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let columns = ["job", "attempt", "at_ms"]
            .into_iter()
            .map(str::to_owned)
            .chain(fields.iter().cloned());
        // Writing to a Vec cannot fail.
        let _ = writer.write_record(columns);
        writer.into_inner().unwrap_or_default()
    });
    let state = (Some(first), monitor, run_id, fields);
    let pages = futures::stream::unfold(state, |(page, monitor, run_id, fields)| async move {
        let page = page?;
        let chunk = render(&page.items, fields.as_ref());
        let next = match page.next {
            Some(after) => match monitor
                .store()
                .outputs(&run_id, Some(after), EXPORT_PAGE)
                .await
            {
                Ok(page) => Some(page),
                Err(error) => {
                    tracing::warn!(%error, "output export cut short");
                    None
                }
            },
            None => None,
        };
        Some((chunk, (next, monitor, run_id, fields)))
    });
    Ok(futures::StreamExt::chain(
        futures::stream::iter(header),
        pages,
    ))
}

async fn output_fields(monitor: &Monitor, run_id: &str) -> Result<BTreeSet<String>> {
    let mut fields = BTreeSet::new();
    let mut after = None;
    loop {
        let page = monitor.store().outputs(run_id, after, EXPORT_PAGE).await?;
        for output in &page.items {
            if let Value::Object(object) = &output.data {
                fields.extend(object.keys().cloned());
            } else {
                fields.insert("value".to_owned());
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(fields),
        }
    }
}

fn render(outputs: &[Output], fields: Option<&BTreeSet<String>>) -> Vec<u8> {
    let Some(fields) = fields else {
        let mut text = Vec::new();
        for output in outputs {
            // Output rows are plain JSON values: they always serialize.
            let _ = serde_json::to_writer(&mut text, output);
            text.push(b'\n');
        }
        return text;
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    for output in outputs {
        let cell = |value: Option<&Value>| match value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        let mut row = vec![
            output.job.to_string(),
            output.attempt.to_string(),
            output.at_ms.to_string(),
        ];
        row.extend(fields.iter().map(|field| match &output.data {
            Value::Object(object) => cell(object.get(field)),
            other if field == "value" => cell(Some(other)),
            _ => String::new(),
        }));
        let _ = writer.write_record(&row);
    }
    writer.into_inner().unwrap_or_default()
}
