# The two commands the README starts with, and the benchmarks.
.PHONY: run run-clusters test lint control-plane helm image test-cluster bench-admission bench-reconciler bench-soak bench-clusters bench-policy fuzz

# A real etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 with scoped-secrets serving
# against it. Ctrl-C stops all.
# The supervisor is the test bed's (testbed/src/bin/local-control-plane.rs); it starts the product's
# binary built beside it.
run:
	cargo build --workspace --bins
	cargo run -p testbed --bin local-control-plane -- --serve --dir .local/control-plane

# Rancher's layout: a management control plane running scoped-secrets (as `make run`) and two
# downstream ones, c-abc123 and c-def456, registered in it (testbed/src/bin/local-clusters.rs); each
# downstream one runs the downstream webhook where the binary has it. Ctrl-C stops all. The control
# plane binaries are built first, so that the three control planes do not each build them.
run-clusters: control-plane
	cargo build --workspace --bins
	cargo run -p testbed --bin local-clusters -- --dir .local/clusters

# The whole suite: unit tests of the pure core, integration tests, and the end-to-end tests against
# the real control plane (built from the Go module proxy on first use and cached); the product crate
# and the test bed (testbed/) both.
test: control-plane helm
	cargo test --workspace --lib --bins --tests

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The release image from the Containerfile (buildah; the base images are made locally with
# mmdebstrap and cached, see hack/image/build.sh); prints its size.
image:
	hack/image/build.sh

# A real one-node cluster (kubelet, containerd, kube-proxy, kube-scheduler) in namespaces of its own,
# running deploy/overlays/self-signed unchanged through the scenarios of hack/node/scenarios.sh; the
# host is restored and checked afterwards. Needs root; prints SKIPPED: <reason> where it cannot run.
test-cluster:
	hack/node/test-cluster.sh

# Builds (once) and caches the control-plane binaries, so that the first test does not time out.
control-plane:
	hack/controlplane/build.sh >/dev/null

# Builds (once) and caches helm at the release pinned in hack/helm/go.mod, for the chart's tests
# (tests/chart.rs).
helm:
	hack/helm/build.sh >/dev/null

# Admission throughput, latency and memory (issue figures): prints reviews/s, p50/p99/p99.9 and RSS,
# and the product's throughput as a fraction of a bare tokio-rustls + hyper server's (the limit).
bench-admission: control-plane
	cargo bench --bench admission

# Reconciler convergence, writes and memory (issue figures).
bench-reconciler: control-plane
	cargo bench --bench reconciler

# Many clusters (issue #11): one original per project to CLUSTERS (10) downstream clusters x
# NAMESPACES_PER_CLUSTER (100), against the single-cluster fan-out of as many copies in the same run;
# then the other clusters' convergence with one cluster's apiserver stopped. 11 control planes.
bench-clusters: control-plane
	cargo bench --bench clusters

# SOAK_SECONDS (default 60) at 5,000 reviews/s with certificate rotations, hostile clients and the
# reconciler fanning out: prints failed reviews, p99, peak RSS and open descriptors before/after.
bench-soak: control-plane
	cargo bench --bench soak

# The rules alone, in process (no cluster): one review of a new secret in a project's namespace
# with 100,000 copies indexed, in microseconds.
bench-policy:
	cargo bench --bench policy

# Long fuzzing run (tests/fuzz/, stable Rust): FUZZ_INPUTS inputs (default 10 million) through the
# admission path and the plan, release profile; prints inputs run, failures and peak memory.
fuzz:
	FUZZ_INPUTS=$${FUZZ_INPUTS:-10000000} cargo test --release --test fuzz
