//! The world this host runs, and whose logic it runs: logic built against
//! this version of `wit/` or an earlier one of the same 0.x line (the world
//! only gains imports there, which a logic need not use), never a later or
//! an incompatible one.

/// This host's world, as `wit/world.wit` names it.
pub const WORLD: &str = "mqtt-device:runtime/device@0.2.2";

/// `package/world` and `(major, minor, patch)` of `world`.
fn parse(world: &str) -> Option<(&str, (u64, u64, u64))> {
    let (name, version) = world.split_once('@')?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    Some((name, version))
}

/// Whether a host of the world `host` runs logic built for `world`: the
/// same package and world, a version the host's is compatible with (the
/// same major, and for 0.x the same minor, as the component model's
/// linking has it) and not newer.
pub fn runs(host: &str, world: &str) -> bool {
    let (Some((host_name, host_version)), Some((name, version))) = (parse(host), parse(world))
    else {
        return host == world;
    };
    let line =
        |(major, minor, _): (u64, u64, u64)| if major == 0 { (0, minor) } else { (major, 0) };
    name == host_name && line(version) == line(host_version) && version <= host_version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_is_the_one_wit_declares() {
        let world = include_str!("../../../wit/world.wit");
        let package = world
            .lines()
            .find_map(|l| l.strip_prefix("package "))
            .and_then(|p| p.strip_suffix(';'))
            .expect("wit/world.wit names its package");
        let (name, version) = package.split_once('@').expect("a versioned package");
        assert!(world.contains("world device {"));
        assert_eq!(WORLD, format!("{name}/device@{version}"));
    }

    #[test]
    fn logic_of_an_earlier_compatible_world_runs_and_of_a_later_one_not() {
        let host = "mqtt-device:runtime/device@0.2.2";
        assert!(runs(host, host));
        assert!(runs(host, "mqtt-device:runtime/device@0.2.0"));
        assert!(runs(host, "mqtt-device:runtime/device@0.2.1"));
        assert!(!runs(host, "mqtt-device:runtime/device@0.2.3"), "later");
        assert!(
            !runs(host, "mqtt-device:runtime/device@0.1.9"),
            "another 0.x line"
        );
        assert!(!runs(host, "mqtt-device:runtime/device@0.3.0"));
        assert!(!runs(host, "acme:radio/device@0.2.0"), "another world");
        assert!(!runs(host, "mqtt-device:runtime/device"), "unversioned");
        assert!(runs("a:b/c@1.4.0", "a:b/c@1.2.7"));
        assert!(!runs("a:b/c@1.4.0", "a:b/c@2.0.0"));
    }
}
