import Foundation

/// `[fleet]` in `tokend.toml` (SPEC §14).
extension ConfigParser {
    /// Parses the `[fleet]` table, if there is one; `minLead` is the daemon's `min_lead`, which the lease must stay
    /// under.
    static func parseFleet(_ reader: inout TableReader, document: ConfigDocument, minLead: Double) -> (FleetSettings?, [ConfigDiagnostic]) {
        guard let table = reader.subtable("fleet") else { return (nil, []) }
        var fleet = TableReader(document: document, path: ["fleet"], table: table)
        var database: FleetDatabase?
        if let url = fleet.string("database") {
            switch FleetDatabaseURL.parse(url) {
            case .success(let parsed): database = parsed
            case .failure(let problem): fleet.fail("database", problem.message)
            }
        } else if fleet.raw("database") == nil {
            fleet.fail("database", "required: a postgresql:// URL")
        }
        let password = fleetSecret(&fleet, "password", required: false)
        let key = fleetSecret(&fleet, "key", required: true)
        let caFile = fleet.string("ca_file")
        if let caFile, !caFile.hasPrefix("/") { fleet.fail("ca_file", "expected an absolute path, found \"\(caFile)\"") }
        let hostID = fleet.string("host_id")
        if let hostID, hostID.count > 200 || hostID.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            fleet.fail("host_id", "expected a printable name of at most 200 characters")
        }
        let lease = fleet.duration("lease")
        if let lease, lease < 1 || lease >= minLead {
            fleet.fail("lease", "expected at least 1s and less than min_lead (\(Int(minLead)) s): a lease covers one fetch")
        }
        let diagnostics = fleet.finish()
        guard let database, let key, !diagnostics.contains(where: { $0.severity == .error }) else { return (nil, diagnostics) }
        var settings = FleetSettings(database: database, password: password, key: key)
        settings.caFile = caFile
        settings.hostID = hostID.flatMap { $0.isEmpty ? nil : $0 }
        if let lease { settings.lease = lease }
        return (settings, diagnostics)
    }

    /// `password` or `key`: `{ credential = … }` or `{ file = … }`, never inline.
    private static func fleetSecret(_ reader: inout TableReader, _ key: String, required: Bool) -> VariableSource? {
        switch reader.raw(key) {
        case .table(let table)?:
            return secretSource(table, key: key, reader: &reader)
        case .string?:
            reader.fail(key, "expected { credential = \"…\" } or { file = \"…\" }: the fleet's \(key) is never written inline")
        case nil:
            if required { reader.fail(key, "required: { credential = \"…\" } or { file = \"…\" } holding 32 bytes of base64") }
        case let value?:
            reader.fail(key, "expected { credential = \"…\" } or { file = \"…\" }, found \(value.kindDescription)")
        }
        return nil
    }
}

/// `postgresql://user@host:port/database?sslmode=…&host=/socket/dir`, as libpq reads it (the subset tokend needs).
enum FleetDatabaseURL {
    /// What is wrong with a URL.
    struct Problem: Error {
        var message: String
    }

    static func parse(_ text: String) -> Result<FleetDatabase, Problem> {
        guard let components = URLComponents(string: text), components.scheme == "postgresql" || components.scheme == "postgres"
        else { return .failure(Problem(message: "expected a postgresql:// URL")) }
        if components.password != nil {
            return .failure(Problem(message: "the URL holds a password: put it in password = { credential = \"…\" } instead"))
        }
        guard let user = components.user, !user.isEmpty else {
            return .failure(Problem(message: "expected a user in the URL (postgresql://USER@host/database)"))
        }
        let name = String(components.path.drop(while: { $0 == "/" }))
        guard !name.isEmpty, !name.contains("/") else {
            return .failure(Problem(message: "expected a database name (postgresql://user@host/DATABASE)"))
        }
        var tls = FleetDatabase.TLSMode.verifyFull
        var socketDirectory: String?
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = item.value.flatMap(FleetDatabase.TLSMode.init(rawValue:)) else {
                    let known = FleetDatabase.TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                    return .failure(Problem(message: "expected sslmode to be one of \(known), found \"\(item.value ?? "")\""))
                }
                tls = mode
            case "host":
                guard let directory = item.value, directory.hasPrefix("/") else {
                    return .failure(Problem(message: "expected host= to name a socket directory (an absolute path)"))
                }
                socketDirectory = directory
            default:
                return .failure(Problem(message: "unsupported URL parameter \"\(item.name)\" (supported: sslmode, host)"))
            }
        }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { return .failure(Problem(message: "expected a port from 1 to 65535")) }
        if let socketDirectory {
            let path = socketDirectory + (socketDirectory.hasSuffix("/") ? "" : "/") + ".s.PGSQL.\(port)"
            return .success(FleetDatabase(address: .unixSocket(path: path), user: user, name: name, tls: .disable))
        }
        guard let host = components.host, !host.isEmpty else {
            return .failure(Problem(message: "expected a host (postgresql://user@HOST/database) or ?host=/socket/directory"))
        }
        return .success(FleetDatabase(address: .tcp(host: host, port: port), user: user, name: name, tls: tls))
    }
}
