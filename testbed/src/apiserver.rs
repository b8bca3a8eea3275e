//! What an apiserver says it served, from its own `/metrics`: how benchmarks count the writes a
//! change cost, where they happen, not by the product's own account.

use anyhow::Result;

/// Mutating requests for secrets an apiserver served, from its `apiserver_request_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Answered 2xx: writes that happened.
    pub ok: u64,
    /// Answered 409: refused by a precondition or a taken name.
    pub conflicts: u64,
}

impl std::ops::Sub for Served {
    type Output = Served;
    fn sub(self, before: Served) -> Served {
        Served {
            ok: self.ok - before.ok,
            conflicts: self.conflicts - before.conflicts,
        }
    }
}

impl std::ops::Add for Served {
    type Output = Served;
    fn add(self, other: Served) -> Served {
        Served {
            ok: self.ok + other.ok,
            conflicts: self.conflicts + other.conflicts,
        }
    }
}

/// The secret writes (create, update, patch, delete) the apiserver `client` reaches has served.
pub async fn secret_writes(client: &kube::Client) -> Result<Served> {
    const WRITES: [&str; 6] = [
        "POST",
        "PUT",
        "PATCH",
        "APPLY",
        "DELETE",
        "DELETECOLLECTION",
    ];
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut served = Served::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let is_write = WRITES
            .iter()
            .any(|v| line.contains(&format!("verb=\"{v}\"")));
        if !(is_write
            && line.contains("resource=\"secrets\"")
            && line.contains("group=\"\"")
            && line.contains("subresource=\"\""))
        {
            continue;
        }
        let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if line.contains("code=\"2") {
            served.ok += n as u64;
        } else if line.contains("code=\"409\"") {
            served.conflicts += n as u64;
        }
    }
    Ok(served)
}
