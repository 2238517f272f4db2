import Foundation

/// Keys that connector files, instance files and `tokend.toml` have in common.
extension ConfigParser {
    /// The `[refresh]` table (SPEC §6); `daemonKeys` reads the keys only `tokend.toml` has.
    static func parseRefreshOverrides(
        _ reader: inout TableReader,
        daemonKeys: (inout TableReader) -> Void = { _ in }
    ) -> RefreshSettings.Overrides {
        var overrides = RefreshSettings.Overrides()
        guard let table = reader.subtable("refresh") else { return overrides }
        var refresh = TableReader(document: reader.document, path: ["refresh"], table: table)
        daemonKeys(&refresh)
        overrides.ratio = refresh.fraction("ratio", range: 0.05...1)
        overrides.minLead = refresh.duration("min_lead")
        overrides.jitter = refresh.fraction("jitter", range: 0...0.5)
        overrides.minInterval = refresh.duration("min_interval")
        overrides.retryInitial = refresh.duration("retry_initial")
        overrides.retryMax = refresh.duration("retry_max")
        overrides.permanentRetry = refresh.duration("permanent_retry")
        overrides.boundToInput = refresh.bool("bound_to_input")
        if let initial = overrides.retryInitial, initial <= 0 {
            refresh.fail("retry_initial", "expected a duration greater than zero")
        }
        if let initial = overrides.retryInitial, let maximum = overrides.retryMax, maximum < initial {
            refresh.fail("retry_max", "expected a duration no shorter than retry_initial")
        }
        for diagnostic in refresh.finish() {
            reader.appendDiagnostic(diagnostic)
        }
        return overrides
    }

    /// An absolute file path (`ca_file`).
    static func absolutePath(_ key: String, _ reader: inout TableReader) -> String? {
        guard let path = reader.string(key) else { return nil }
        guard path.hasPrefix("/"), !path.hasSuffix("/") else {
            reader.fail(key, "expected an absolute file path, found \"\(path)\"")
            return nil
        }
        return path
    }
}
