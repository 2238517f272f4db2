/// `[metrics]` in `tokend.toml` (SPEC §5).
extension ConfigParser {
    /// Parses the `[metrics]` table, if there is one, into `settings`.
    ///
    /// A listener on an address other than loopback is allowed, with a warning: the metrics name every instance.
    static func parseMetrics(_ reader: inout TableReader, document: ConfigDocument) -> (MetricsSettings, [ConfigDiagnostic]) {
        var settings = MetricsSettings()
        guard let table = reader.subtable("metrics") else { return (settings, []) }
        var metrics = TableReader(document: document, path: ["metrics"], table: table)
        if let listen = metrics.string("listen") {
            switch MetricsListenAddress.parse(listen) {
            case .success(let address):
                settings.listen = address
                if !address.isLoopback {
                    metrics.warn(
                        "listen",
                        "\(address) is not a loopback address: whoever reaches it reads the metrics (every instance's name and "
                            + "state); prefer 127.0.0.1 or [::1] behind a scraper on this host"
                    )
                }
            case .failure(let problem):
                metrics.fail("listen", problem.message)
            }
        }
        if let path = metrics.string("textfile") {
            if let problem = textfileProblem(path) {
                metrics.fail("textfile", problem)
            } else {
                settings.textfile = path
            }
        }
        if let interval = metrics.duration("textfile_interval") {
            if interval < 1 {
                metrics.fail("textfile_interval", "expected at least 1s")
            } else {
                settings.textfileInterval = interval
                if metrics.raw("textfile") == nil { metrics.warn("textfile_interval", "has no effect without textfile") }
            }
        }
        return (settings, metrics.finish())
    }

    /// Why `path` cannot be a node_exporter textfile, or nil.
    static func textfileProblem(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "expected an absolute path, found \"\(path)\"" }
        guard !path.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            return "expected a path without control characters"
        }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            return "expected a plain path (no empty, \".\" or \"..\" parts), found \"\(path)\""
        }
        guard let name = components.last, name.hasSuffix(".prom"), name.count > 5, !name.hasPrefix(".") else {
            return "expected a file name ending in .prom (node_exporter's textfile collector reads only those), found \"\(path)\""
        }
        return nil
    }
}
