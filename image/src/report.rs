//! The summary printed after a build: outputs with sizes, the kernel, and
//! where the time went.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// One file written to `--out`.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub kernel_release: String,
    pub kernel_package: String,
    pub kernel_version: String,
    pub epoch: u64,
    pub stage1_modules: usize,
    pub rootfs_modules: usize,
    pub outputs: Vec<Output>,
    pub timings: Vec<(String, Duration)>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .outputs
            .iter()
            .map(|o| o.path.display().to_string().len())
            .max()
            .unwrap_or(0)
            .max("output".len());
        writeln!(f, "{:<width$}  {:>10}", "output", "size (MiB)")?;
        for o in &self.outputs {
            let path = o.path.display().to_string();
            writeln!(f, "{path:<width$}  {:>10.2}", mib(o.bytes))?;
        }
        writeln!(
            f,
            "kernel {} ({} {}); {} stage-1 modules, {} in the root image; SOURCE_DATE_EPOCH={}",
            self.kernel_release,
            self.kernel_package,
            self.kernel_version,
            self.stage1_modules,
            self.rootfs_modules,
            self.epoch
        )?;
        let total: Duration = self.timings.iter().map(|(_, d)| *d).sum();
        let steps: Vec<String> = self
            .timings
            .iter()
            .map(|(label, d)| format!("{label} {:.1}s", d.as_secs_f64()))
            .collect();
        write!(
            f,
            "built in {:.1}s: {}",
            total.as_secs_f64(),
            steps.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_sizes_in_mib_with_two_decimals() {
        let report = BuildReport {
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            kernel_package: "linux-image-6.1.0-56-cloud-amd64".into(),
            kernel_version: "6.1.192-2".into(),
            epoch: 0,
            stage1_modules: 20,
            rootfs_modules: 300,
            outputs: vec![Output {
                name: "vmlinuz",
                path: "_out/vmlinuz".into(),
                bytes: 3 * 1024 * 1024 + 512 * 1024,
            }],
            timings: vec![("fetching kernel".into(), Duration::from_millis(1500))],
        };
        let text = report.to_string();
        assert!(text.contains("_out/vmlinuz        3.50\n"), "{text}");
        assert!(text.contains("kernel 6.1.0-56-cloud-amd64"), "{text}");
        assert!(
            text.ends_with("built in 1.5s: fetching kernel 1.5s"),
            "{text}"
        );
    }
}
