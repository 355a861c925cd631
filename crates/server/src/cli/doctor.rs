//! `tenant-plane doctor`: registry vs servers.

use std::time::Duration;

use provisioner::doctor::{self, Finding};

use super::table::{or_dash, print_json, print_table};
use crate::config::Settings;
use crate::provisioning;

/// Exit code when the doctor found something (1 is for errors).
pub const FINDINGS_EXIT_CODE: u8 = 2;

/// Returns the findings; the caller turns a non-empty list into exit code 2.
pub async fn run(
    settings: &Settings,
    json: bool,
    stuck_after: Duration,
) -> anyhow::Result<Vec<Finding>> {
    let pool = crate::startup::control_pool(settings)?;
    let findings = doctor::diagnose(
        &pool,
        &provisioning::host_connector(settings)?,
        &settings.prefix()?,
        &provisioning::templates(settings)?,
        stuck_after,
    )
    .await?;
    if json {
        print_json(&findings)?;
    } else if findings.is_empty() {
        println!("registry and servers agree: no findings");
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| {
                vec![
                    serde_json::to_value(f.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    or_dash(f.host.clone()),
                    or_dash(f.tenant_id),
                    or_dash(f.name.clone()),
                    f.detail.clone(),
                ]
            })
            .collect();
        print_table(&["FINDING", "HOST", "TENANT", "NAME", "DETAIL"], &rows);
        println!("\n{} finding(s)", findings.len());
    }
    Ok(findings)
}
