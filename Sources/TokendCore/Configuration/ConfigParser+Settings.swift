import Foundation

/// `tokend.toml`, the daemon settings.
extension ConfigParser {
    /// Parses `tokend.toml`.
    ///
    /// Any error rejects the whole file (and only the errors come back); without one, the settings come back with the
    /// warnings.
    public static func parseSettings(file: String, text: String) -> (settings: DaemonSettings?, diagnostics: [ConfigDiagnostic]) {
        let document: ConfigDocument
        switch ConfigDocument.parse(file: file, text: text) {
        case .success(let parsed): document = parsed
        case .failure(let diagnostic): return (nil, [diagnostic])
        }
        var settings = DaemonSettings()
        var reader = TableReader(document: document, path: [], table: document.root)
        var diagnostics: [ConfigDiagnostic] = []
        if let mode = reader.string("socket_mode") {
            if let parsed = UInt16(mode, radix: 8), parsed <= 0o777 {
                settings.socketMode = parsed
            } else {
                reader.fail("socket_mode", "expected an octal mode such as \"0660\", found \"\(mode)\"")
            }
        }
        settings.socketGroup = reader.string("socket_group")
        settings.adminGroup = reader.string("admin_group")
        if let level = reader.string("log_level") {
            if DaemonSettings.logLevels.contains(level) {
                settings.logLevel = level
            } else {
                reader.fail("log_level", "expected one of \(DaemonSettings.logLevels.joined(separator: ", "))")
            }
        }
        if let timeout = reader.duration("startup_timeout") { settings.startupTimeout = timeout }
        parseConnectionLimits(&reader, into: &settings)
        let overrides = parseRefreshOverrides(&reader) { refresh in
            if let value = refresh.integer("max_concurrent", range: 1...100_000) {
                settings.refresh.maxConcurrent = value
            }
            if let value = refresh.integer("per_endpoint_concurrent", range: 1...100_000) {
                settings.refresh.perEndpointConcurrent = value
            }
        }
        settings.refresh = settings.refresh.applying(overrides)
        if let http = reader.subtable("http") {
            var httpReader = TableReader(document: document, path: ["http"], table: http)
            if let value = httpReader.duration("connect_timeout") { settings.connectTimeout = max(value, 0.001) }
            if let value = httpReader.duration("timeout") { settings.requestTimeout = max(value, 0.001) }
            if let proxy = httpReader.string("proxy") {
                if ProxySettings.parse(proxy) != nil {
                    settings.proxy = proxy
                } else {
                    httpReader.fail("proxy", "expected an http://host:port URL without credentials, found \"\(proxy)\"")
                }
            }
            if let value = httpReader.raw("no_proxy") {
                if case .array(let items) = value {
                    var hosts: [String] = []
                    for case .string(let host) in items where !host.isEmpty { hosts.append(host) }
                    if hosts.count == items.count { settings.noProxy = hosts }
                }
                if settings.noProxy == nil {
                    httpReader.fail("no_proxy", "expected an array of host names, such as [\"localhost\", \".internal.example\"]")
                }
            }
            diagnostics += httpReader.finish()
        }
        let (fleet, fleetDiagnostics) = parseFleet(&reader, document: document, minLead: settings.refresh.minLead)
        settings.fleet = fleet
        diagnostics += fleetDiagnostics
        let (metrics, metricsDiagnostics) = parseMetrics(&reader, document: document)
        settings.metrics = metrics
        diagnostics += metricsDiagnostics
        diagnostics += reader.finish()
        let errors = diagnostics.filter { $0.severity == .error }
        // Warnings come back with the settings: the loader reports them as `tokend check` and a reload do.
        return errors.isEmpty ? (settings, diagnostics) : (nil, errors)
    }

    /// `max_connections`, `max_connections_per_uid`, `admin_connections` and `request_head_timeout`.
    static func parseConnectionLimits(_ reader: inout TableReader, into settings: inout DaemonSettings) {
        var limits = settings.connections
        if let value = reader.integer("max_connections", range: 2...1_000_000) {
            limits.maxConnections = value
            limits.adminReserve = value / 16
        }
        if let value = reader.integer("max_connections_per_uid", range: 1...1_000_000) { limits.perCaller = value }
        if let value = reader.integer("admin_connections", range: 0...1_000_000) {
            if value < limits.maxConnections {
                limits.adminReserve = value
            } else {
                reader.fail("admin_connections", "must be less than max_connections (\(limits.maxConnections)): others need room too")
            }
        }
        settings.connections = limits
        if let timeout = reader.duration("request_head_timeout") {
            if timeout >= 0.1 {
                settings.requestHeadTimeout = timeout
            } else {
                reader.fail("request_head_timeout", "expected at least 100ms")
            }
        }
    }
}
