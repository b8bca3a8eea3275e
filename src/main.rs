//! The `scoped-secrets` binary: `serve`, `certs`, `plan`.

use anyhow::Result;
use clap::Parser;
use scoped_secrets::cli::{CertsArgs, Cli, Command, PlanArgs};
use scoped_secrets::webhook::runtime;
use scoped_secrets::{certs, report, serve, telemetry};
use std::process::ExitCode;

// The admission path allocates per review; jemalloc keeps that cheap across worker threads and
// returns freed memory to the system (what Linkerd and TiKV run with).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    // `serve` answers reviews on threads of their own (started from this thread, at its
    // priority); everything else runs on a runtime whose threads yield to them.
    let runtime = match cli.command {
        Command::Serve(_) => runtime::background()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            serve::run(*args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Certs(args) => write_certs(&args).map(|()| ExitCode::SUCCESS),
        Command::Plan(args) => plan(&args).await,
    }
}

/// Prints the plan; exits with [`report::UNREADABLE_EXIT_CODE`] when a registered cluster could not
/// be read (its plan is unknown).
async fn plan(args: &PlanArgs) -> Result<ExitCode> {
    let client = if args.offline {
        None
    } else {
        Some(kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("connecting to the Kubernetes API (or use --offline with -f): {e}")
        })?)
    };
    let output = report::plan_command(
        client,
        args.file.as_deref(),
        args.json,
        args.manage_backing_namespaces,
        &args.copies.settings(&args.home.lease_namespace),
        &args.clusters(),
    )
    .await?;
    print!("{}", output.text);
    Ok(if output.unreadable > 0 {
        ExitCode::from(report::UNREADABLE_EXIT_CODE)
    } else {
        ExitCode::SUCCESS
    })
}

fn write_certs(args: &CertsArgs) -> Result<()> {
    let written = certs::write_serving_set(
        &args.out,
        &args.dns_names,
        &args.ips,
        args.ca_days,
        args.days,
    )?;
    let ca = if written.created_ca {
        "created"
    } else {
        "reused"
    };
    eprintln!(
        "wrote {dir}/{cert} and {dir}/{key} (CA {ca}: {dir}/{ca_cert})",
        dir = written.dir.display(),
        cert = certs::TLS_CERT,
        key = certs::TLS_KEY,
        ca_cert = certs::CA_CERT,
    );
    eprintln!("caBundle for the webhook configurations:");
    println!("{}", written.ca_bundle_base64);
    Ok(())
}
