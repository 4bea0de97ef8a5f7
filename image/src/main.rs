//! slate-image: parse arguments, build, print the report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slate_image::{KernelFlavor, Options};

/// Build the Slate boot image: vmlinuz, initramfs.zst, rootfs.sqsh, slate.iso,
/// and with extensions, extensions.cpio.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Debian kernel flavour: cloud (VMs) or metal (bare metal drivers).
    #[arg(long, value_enum, default_value = "cloud")]
    kernel: KernelFlavor,
    /// Directory with the static init, machined, apid and networkd.
    #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/release")]
    bin_dir: PathBuf,
    /// Output directory (work files in OUT/work, downloads in OUT/cache).
    #[arg(long, default_value = "_out")]
    out: PathBuf,
    /// Extra kernel arguments, appended to the default command line.
    #[arg(long, value_name = "EXTRA")]
    cmdline: Option<String>,
    /// Join a cluster at boot: the join URL `slatectl gen join-token`
    /// prints (https://HOST:50001/sha256:HEX). The image's nodes boot with
    /// `slate.join=…` and register with the control plane (docs/join.md).
    #[arg(long, value_name = "URL", requires = "join_token")]
    join: Option<String>,
    /// The join token for --join (ID.SECRET).
    #[arg(long, value_name = "TOKEN", requires = "join")]
    join_token: Option<String>,
    /// Skip slate.iso (faster development loop).
    #[arg(long)]
    no_iso: bool,
    /// Debian packages whose programs go into the extension layer
    /// (extensions.cpio, mounted on /usr/local): containerd, runc,
    /// etcd-server. Comma-separated; empty for none.
    #[arg(long, value_delimiter = ',', value_name = "PACKAGES")]
    debian_extensions: Vec<String>,
    /// Another program for the extension layer, e.g.
    /// `--extension kubelet=/path/to/kubelet` (repeatable).
    #[arg(long = "extension", value_name = "NAME=PATH")]
    extensions: Vec<slate_image::extensions::Extension>,
    /// A service the node runs from the extension layer, declared in YAML
    /// (name, command, limits, restart, dependencies; see
    /// docs/architecture.md), e.g. `--extension-service exporter.yaml`.
    #[arg(long = "extension-service", value_name = "FILE")]
    extension_services: Vec<PathBuf>,
    /// A container image archive (OCI or docker `.tar`, as `docker save`,
    /// `skopeo copy … oci-archive:` or `ctr images export` write it) that
    /// the node imports into containerd's k8s.io namespace at boot, before
    /// kubelet starts (repeatable): for sites without registry access.
    #[arg(long = "image-archive", value_name = "FILE.tar")]
    image_archives: Vec<PathBuf>,
    /// The release this image says it is (os-release, `slatectl version`,
    /// the bundle's manifest); for building an upgrade.
    #[arg(long, value_name = "VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    os_version: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("slate-image: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--cmdline` with `slate.join=…` of `--join` and `--join-token` after it.
fn cmdline_extra(args: &Args) -> anyhow::Result<Option<String>> {
    let (Some(url), Some(token)) = (&args.join, &args.join_token) else {
        return Ok(args.cmdline.clone());
    };
    let token = slate_config::join::JoinToken::parse(token)
        .map_err(|e| anyhow::anyhow!("--join-token: {e}"))?;
    let url = slate_config::join::JoinUrl::parse(url, Some(&token))
        .map_err(|e| anyhow::anyhow!("--join: {e}"))?;
    let join = format!("slate.join={url}");
    Ok(Some(match &args.cmdline {
        Some(extra) => format!("{extra} {join}"),
        None => join,
    }))
}

fn run(args: Args) -> anyhow::Result<()> {
    let opts = Options {
        cmdline_extra: cmdline_extra(&args)?,
        kernel: args.kernel,
        bin_dir: args.bin_dir,
        out: args.out,
        iso: !args.no_iso,
        debian_extensions: args
            .debian_extensions
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect(),
        extensions: args.extensions,
        extension_services: args.extension_services,
        image_archives: args.image_archives,
        version: args.os_version,
    };
    let report = slate_image::build(&opts)?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://10.5.0.2:50001/sha256:b9d37413926234d2d449b95678b20675798a13df744847cc1afc0bbedbfd9cf6";

    #[test]
    fn join_flags_become_one_kernel_argument_after_the_others() {
        let args = Args::parse_from([
            "slate-image",
            "--cmdline",
            "slate.debug",
            "--join",
            URL,
            "--join-token",
            "abc123.0123456789abcdef",
        ]);
        let extra = cmdline_extra(&args).unwrap().unwrap();
        assert_eq!(
            extra,
            "slate.debug slate.join=https://abc123.0123456789abcdef@10.5.0.2:50001/sha256:b9d37413926234d2d449b95678b20675798a13df744847cc1afc0bbedbfd9cf6"
        );
    }

    #[test]
    fn a_bad_join_token_or_url_is_refused_by_name() {
        let bad_token = Args::parse_from(["slate-image", "--join", URL, "--join-token", "nope"]);
        let err = cmdline_extra(&bad_token).unwrap_err().to_string();
        assert!(err.starts_with("--join-token"), "{err}");
        let bad_url = Args::parse_from([
            "slate-image",
            "--join",
            "https://10.5.0.2:50001",
            "--join-token",
            "abc123.0123456789abcdef",
        ]);
        let err = cmdline_extra(&bad_url).unwrap_err().to_string();
        assert!(err.starts_with("--join") && err.contains("sha256"), "{err}");
        assert!(
            Args::try_parse_from(["slate-image", "--join", URL]).is_err(),
            "--join needs --join-token"
        );
    }
}
