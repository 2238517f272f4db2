import Dispatch
import Foundation

/// Assembles a whole config directory from file texts: parses every file, reads secrets through an injected reader,
/// renders each instance's request.
///
/// Pure: the caller supplies the texts and the secret reader.
public enum ConfigLoader {
    /// One file of the directory, as read.
    public struct File: Sendable, Hashable {
        public var path: String
        public var text: String

        public init(path: String, text: String) {
            self.path = path
            self.text = text
        }
    }

    /// The directory's contents.
    ///
    /// A file whose text could not be read carries the reason instead.
    public struct Input: Sendable {
        public var settings: Result<File, ConfigDiagnostic>?
        public var connectors: [(name: String, file: Result<File, ConfigDiagnostic>)]
        public var instances: [(name: String, file: Result<File, ConfigDiagnostic>)]

        public init(
            settings: Result<File, ConfigDiagnostic>?,
            connectors: [(name: String, file: Result<File, ConfigDiagnostic>)] = [],
            instances: [(name: String, file: Result<File, ConfigDiagnostic>)]
        ) {
            self.settings = settings
            self.connectors = connectors
            self.instances = instances
        }
    }

    /// What came out: the settings, every good instance, and the names of instances whose files failed.
    public struct Loaded: Sendable {
        /// nil when `tokend.toml` has an error: a reload must then change nothing.
        public var settings: DaemonSettings?
        public var instances: [String: ResolvedInstance]
        /// Instances defined by a file that failed validation: what they ran before keeps running.
        public var failedInstances: Set<String>
        /// Errors and warnings, in file order.
        public var diagnostics: [ConfigDiagnostic]

        public var errors: [ConfigDiagnostic] { diagnostics.filter { $0.severity == .error } }
    }

    /// Reads a secret source; the message of a failure must not contain the secret.
    public typealias SecretReader = @Sendable (VariableSource) -> Result<SecretText, SecretReadError>

    /// A secret's text, and a warning about how it is stored (a world-readable file, say).
    public struct SecretText: Sendable, Hashable {
        public var text: String
        public var warning: String?

        public init(_ text: String, warning: String? = nil) {
            self.text = text
            self.warning = warning
        }
    }

    /// Resolves a user or group name to its id (`getpwnam`/`getgrnam` in the daemon); nil for an unknown name.
    public typealias IdentityResolver = @Sendable (IdentityKind, String) -> UInt32?

    public enum IdentityKind: String, Sendable {
        case user
        case group
    }

    /// Resolves numeric ids only: what a pure caller (a test) gets unless it passes its own resolver.
    public static let numericIdentities: IdentityResolver = { _, name in UInt32(name) }

    /// Checks that TLS material parses (certificates, key, CA bundle); the IO layer's, with NIOSSL.
    public typealias TLSChecker = @Sendable (TLSMaterial) -> TLSProblem?

    /// Fetches an issuer's metadata (OpenID Connect Discovery, then RFC 8414) with the instance's TLS material and the
    /// daemon's proxy and timeouts; the failure says why, naming the URLs tried.
    public typealias Discoverer =
        @Sendable (_ issuer: String, _ tls: TLSMaterial, _ settings: DaemonSettings) -> Result<DiscoveryDocument, DiscoveryError>

    /// What a pure caller gets: no discovery.
    public static let noDiscovery: Discoverer = { issuer, _, _ in .failure(DiscoveryError("discovery of \(issuer) is not available here")) }

    public struct SecretReadError: Error, Sendable, Hashable {
        public var message: String

        public init(_ message: String) {
            self.message = message
        }
    }

    public static func load(
        _ input: Input,
        memo: Memo? = nil,
        resolveIdentity: IdentityResolver = numericIdentities,
        checkTLS: TLSChecker = { _ in nil },
        discover: Discoverer = noDiscovery,
        readSecret: SecretReader
    ) -> Loaded {
        let memo = memo ?? Memo()
        memo.lock.lock()
        defer { memo.lock.unlock() }
        var diagnostics: [ConfigDiagnostic] = []
        var settings: DaemonSettings? = DaemonSettings()
        switch input.settings {
        case .success(let file)?:
            let (parsed, errors) = ConfigParser.parseSettings(file: file.path, text: file.text)
            settings = parsed
            diagnostics += errors
        case .failure(let unreadable)?:
            settings = nil
            diagnostics.append(unreadable)
        case nil:
            break
        }
        var connectors: [String: ConnectorDefinition] = [:]
        var failedConnectors: Set<String> = []
        for (name, file) in input.connectors {
            switch file {
            case .success(let text):
                let (connector, found) = ConfigParser.parseConnector(name: name, file: text.path, text: text.text)
                diagnostics += found
                if let connector { connectors[name] = connector } else { failedConnectors.insert(name) }
            case .failure(let diagnostic):
                diagnostics.append(diagnostic)
                failedConnectors.insert(name)
            }
        }
        let lookup: (String) -> ConfigParser.ConnectorLookup = { name in
            if let connector = connectors[name] { return .found(connector) }
            return failedConnectors.contains(name) ? .invalid : .missing
        }
        // An instance's parse depends on its own text and on the connectors, nothing else: when no connector file
        // changed, the last load's parse of an unchanged text is this load's.
        let connectorTexts = input.connectors.map { ConnectorText(name: $0.name, file: $0.file) }
        if connectorTexts != memo.connectorTexts {
            memo.parsed = [:]
            memo.connectorTexts = connectorTexts
        }

        // 1. Parse every instance file: pure work, on every core.
        let previousParses = memo.parsed
        let parses = Parallel.map(input.instances.count) { index -> ParsedFile? in
            let (name, file) = input.instances[index]
            guard case .success(let text) = file else { return nil }
            if let known = previousParses[name], known.path == text.path, known.text == text.text { return known }
            let (definition, found) = ConfigParser.parseInstance(name: name, file: text.path, text: text.text, connectors: lookup)
            return ParsedFile(path: text.path, text: text.text, definition: definition, diagnostics: found)
        }
        var parsed: [String: ParsedFile] = [:]
        for (index, entry) in parses.enumerated() {
            if let entry { parsed[input.instances[index].name] = entry }
        }
        memo.parsed = parsed
        let graphProblems = dependencyProblems(
            parsed.compactMapValues(\.definition),
            defined: Set(input.instances.map(\.name))
        )

        let credentialProblems = credentialIDProblems(input.instances.map(\.name), parsed: parsed)

        // 2. Read each instance's secrets, TLS material and issuer metadata: the injected I/O, one at a time.
        let effectiveSettings = settings ?? DaemonSettings()
        let inputs = input.instances.map { name, _ -> RenderInput? in
            guard let definition = parsed[name]?.definition else { return nil }
            return renderInput(definition, settings: effectiveSettings, checkTLS: checkTLS, discover: discover, readSecret: readSecret)
        }

        // 3. Render every request and its fingerprint: pure again, on every core, skipped when nothing changed.
        let previousRenders = memo.rendered
        let renders = Parallel.map(inputs.count) { index -> RenderedRequest? in
            guard let input = inputs[index], let definition = input.definition else { return nil }
            let key = RenderKey(definition: definition, values: input.values, tls: input.tls)
            if let known = previousRenders[definition.name], known.key == key { return known }
            return RenderedRequest(key: key, result: TokenRequestBuilder.resolve(definition, values: input.values, tls: input.tls))
        }
        var rendered: [String: RenderedRequest] = [:]

        // 4. Assemble in file order, resolving user and group names.
        var instances: [String: ResolvedInstance] = [:]
        var failed: Set<String> = []
        for (index, (name, file)) in input.instances.enumerated() {
            if case .failure(let diagnostic) = file {
                diagnostics.append(diagnostic)
                failed.insert(name)
                continue
            }
            guard let parse = parsed[name] else { continue }
            diagnostics += parse.diagnostics
            guard let definition = parse.definition, let input = inputs[index] else {
                failed.insert(name)
                continue
            }
            if let problems = graphProblems[name] {
                diagnostics += problems
                failed.insert(name)
                continue
            }
            if let problem = credentialProblems[name] {
                diagnostics.append(problem)
                failed.insert(name)
                continue
            }
            var resolution = input.diagnostics
            var resolved: ResolvedInstance?
            if let render = renders[index] {
                rendered[name] = render
                switch render.result {
                case .success(let made): resolved = made
                case .failure(let problem): resolution.append(problem)
                }
            }
            if let rule = definition.access {
                var uids: Set<UInt32> = []
                var gids: Set<UInt32> = []
                for (kind, names) in [(IdentityKind.user, rule.users), (.group, rule.groups)] {
                    for name in names {
                        if let id = UInt32(name) ?? resolveIdentity(kind, name) {
                            if kind == .user { uids.insert(id) } else { gids.insert(id) }
                        } else {
                            resolution.append(
                                ConfigDiagnostic(
                                    file: definition.file,
                                    line: rule.line,
                                    key: "access.\(kind == .user ? "users" : "groups")",
                                    message: "no \(kind.rawValue) named '\(name)' on this host"
                                )
                            )
                            resolved = nil
                        }
                    }
                }
                // `units` alone gives no uid or gid: over the API socket the token is then the admins' only.
                resolved?.access = AccessPolicy(uids: uids, gids: gids)
            }
            if let sink = definition.sink {
                var ids: [IdentityKind: UInt32] = [:]
                for (kind, name) in [(IdentityKind.user, sink.owner), (.group, sink.group)] {
                    guard let name else { continue }
                    if let id = UInt32(name) ?? resolveIdentity(kind, name) {
                        ids[kind] = id
                    } else {
                        resolution.append(
                            ConfigDiagnostic(
                                file: definition.file,
                                line: sink.line,
                                key: kind == .user ? "sink.owner" : "sink.group",
                                message: "no \(kind.rawValue) named '\(name)' on this host"
                            )
                        )
                        resolved = nil
                    }
                }
                resolved?.sink = SinkTarget(path: sink.path, mode: sink.mode, uid: ids[.user], gid: ids[.group])
                // The file would hand the token to every local user, whatever the socket's [access] rule says.
                if definition.access != nil, sink.mode & 0o004 != 0 {
                    resolution.append(
                        ConfigDiagnostic(
                            file: definition.file,
                            line: sink.line,
                            key: "sink.mode",
                            message: "\(DirectoryTrust.octal(UInt32(sink.mode))) lets every user read the token file, which "
                                + "bypasses [access]; use 0640 with a group or 0600",
                            severity: .warning
                        )
                    )
                }
            }
            diagnostics += resolution
            if let resolved {
                instances[name] = resolved
            } else {
                failed.insert(name)
            }
        }
        memo.rendered = rendered
        return Loaded(settings: settings, instances: instances, failedInstances: failed, diagnostics: diagnostics)
    }

    /// The instances whose `credential_id` is already another instance's credential id (its `credential_id`, or its
    /// name when it sets none), each with the error naming both files; of two `credential_id`s the later file's fails.
    fileprivate static func credentialIDProblems(_ names: [String], parsed: [String: ParsedFile]) -> [String: ConfigDiagnostic] {
        var claimed: [String: String] = [:]
        for name in names where parsed[name]?.definition?.credentialID == nil {
            claimed[name] = name
        }
        var problems: [String: ConfigDiagnostic] = [:]
        for name in names {
            guard let definition = parsed[name]?.definition, let id = definition.credentialID else { continue }
            if let other = claimed[id], other != name {
                let otherFile = parsed[other]?.path ?? "instances/\(other).toml"
                let how = parsed[other]?.definition?.credentialID == nil ? "the name of" : "the credential_id of"
                problems[name] = ConfigDiagnostic(
                    file: definition.file,
                    line: definition.source?.line(of: ["credential_id"]),
                    key: "credential_id",
                    message: "credential id '\(id)' is already \(how) instance '\(other)' (\(otherFile)); credential ids must be unique"
                )
            } else {
                claimed[id] = name
            }
        }
        return problems
    }

    /// What one load learned, for the next: each instance file's parse and each request's rendering, reused when their
    /// inputs are equal (a SIGHUP that changes a few files parses and renders only those).
    ///
    /// Secrets, TLS material and issuer metadata are read again on every load, so a rotated secret is always seen.
    public final class Memo: @unchecked Sendable {
        // Guarded by `lock`, held for a whole load.
        let lock = NSLock()
        fileprivate var connectorTexts: [ConnectorText] = []
        fileprivate var parsed: [String: ParsedFile] = [:]
        fileprivate var rendered: [String: RenderedRequest] = [:]

        public init() {}
    }

    fileprivate struct ConnectorText: Equatable {
        var name: String
        var file: Result<File, ConfigDiagnostic>
    }

    fileprivate struct ParsedFile: Sendable {
        var path: String
        var text: String
        var definition: InstanceDefinition?
        var diagnostics: [ConfigDiagnostic]
    }

    fileprivate struct RenderKey: Sendable, Equatable {
        var definition: InstanceDefinition
        var values: VariableMap<Secret>
        var tls: TLSMaterial
    }

    /// A class: the memo's dictionary then holds a pointer per instance, not the whole value with a diagnostic's room
    /// inline (BENCHMARKS.md, "Figures behind code comments").
    fileprivate final class RenderedRequest: Sendable {
        let key: RenderKey
        let result: Result<ResolvedInstance, ConfigDiagnostic>

        init(key: RenderKey, result: Result<ResolvedInstance, ConfigDiagnostic>) {
            self.key = key
            self.result = result
        }
    }

    /// An instance's secrets read, its TLS material checked and its issuer discovered: what rendering needs.
    struct RenderInput: Sendable {
        /// The definition with the discovered token URL; nil when an error in `diagnostics` stopped it.
        var definition: InstanceDefinition?
        var values = VariableMap<Secret>()
        var tls = TLSMaterial()
        /// Warnings, and the errors that stopped it, in order.
        var diagnostics: [ConfigDiagnostic] = []
    }

    /// Reads the instance's secret sources and TLS material, and discovers its token URL: everything its request
    /// is rendered from.
    static func renderInput(
        _ definition: InstanceDefinition,
        settings: DaemonSettings,
        checkTLS: TLSChecker,
        discover: Discoverer,
        readSecret: SecretReader
    ) -> RenderInput {
        var input = RenderInput()
        var errors: [ConfigDiagnostic] = []
        for (name, source) in definition.variables.sorted(by: { $0.key < $1.key }) {
            switch source {
            case .literal(let text):
                input.values[name] = Secret(text)
            case .instance(let other):
                // The other instance's token, read for each fetch; this stands in for it when the request is checked.
                input.values[name] = Secret(instanceTokenPlaceholder(other))
            case .file, .credential:
                switch readSecret(source) {
                case .success(let secret):
                    input.values[name] = Secret(trimmingOneNewline(secret.text))
                    // A certificate is public: its file may well be readable by everyone.
                    if let warning = secret.warning, name != "client_certificate" {
                        input.diagnostics.append(
                            ConfigDiagnostic(
                                file: definition.file,
                                line: definition.line(ofVariable: name),
                                key: "variables.\(name)",
                                message: warning,
                                severity: .warning
                            )
                        )
                    }
                case .failure(let error):
                    errors.append(
                        ConfigDiagnostic(
                            file: definition.file,
                            line: definition.line(ofVariable: name),
                            key: "variables.\(name)",
                            message: error.message
                        )
                    )
                }
            }
        }
        guard errors.isEmpty else {
            input.diagnostics += errors
            return input
        }
        switch tlsMaterial(definition, values: input.values, checkTLS: checkTLS, readSecret: readSecret) {
        case .success(let material): input.tls = material
        case .failure(let error):
            input.diagnostics.append(error)
            return input
        }
        var definition = definition
        if let issuerTemplate = definition.connector.issuer {
            switch discoverTokenURL(
                definition,
                issuerTemplate: issuerTemplate,
                values: input.values,
                tls: input.tls,
                settings: settings,
                discover: discover
            ) {
            case .success(let url): definition.connector.tokenURL = url
            case .failure(let error):
                input.diagnostics.append(error)
                return input
            }
        }
        input.definition = definition
        return input
    }

    /// `ca_file` read, the client certificate and key taken from their variables, and all of it checked.
    static func tlsMaterial(
        _ definition: InstanceDefinition,
        values: VariableMap<Secret>,
        checkTLS: TLSChecker,
        readSecret: SecretReader
    ) -> Result<TLSMaterial, ConfigDiagnostic> {
        var tls = TLSMaterial()
        if let caFile = definition.caFile {
            tls.caFile = caFile.path
            switch readSecret(.file(path: caFile.path)) {
            case .success(let text): tls.trustRootsPEM = text.text
            case .failure(let error):
                return .failure(ConfigDiagnostic(file: caFile.file, line: caFile.line, key: "ca_file", message: error.message))
            }
        }
        // A certificate named only for an assertion's thumbprint (no client_key) is not presented on the connection.
        let forThumbprintOnly = definition.connector.assertion?.usesCertificate == true && (values["client_key"]?.revealed ?? "").isEmpty
        if let certificate = values["client_certificate"]?.revealed, !certificate.isEmpty, !forThumbprintOnly {
            tls.clientCertificatePEM = certificate
        }
        if let key = values["client_key"], !key.revealed.isEmpty {
            tls.clientKeyPEM = key
        }
        if (tls.clientCertificatePEM == nil) != (tls.clientKeyPEM == nil) {
            let missing = tls.clientKeyPEM == nil ? "client_key" : "client_certificate"
            return .failure(
                ConfigDiagnostic(
                    file: definition.file,
                    line: definition.line(ofVariable: missing == "client_key" ? "client_certificate" : "client_key"),
                    key: "variables.\(missing)",
                    message: "a client certificate needs both client_certificate and client_key"
                )
            )
        }
        guard let problem = checkTLS(tls) else { return .success(tls) }
        if problem.key == "ca_file", let caFile = definition.caFile {
            return .failure(ConfigDiagnostic(file: caFile.file, line: caFile.line, key: "ca_file", message: problem.message))
        }
        let variable = problem.key.hasPrefix("variables.") ? String(problem.key.dropFirst("variables.".count)) : problem.key
        return .failure(
            ConfigDiagnostic(file: definition.file, line: definition.line(ofVariable: variable), key: problem.key, message: problem.message)
        )
    }

    /// The token URL from the issuer's metadata, checked against the configured `client_auth`.
    static func discoverTokenURL(
        _ definition: InstanceDefinition,
        issuerTemplate: String,
        values: VariableMap<Secret>,
        tls: TLSMaterial,
        settings: DaemonSettings,
        discover: Discoverer
    ) -> Result<String, ConfigDiagnostic> {
        let connector = definition.connector
        var merged: [String: String] = [:]
        for (name, spec) in connector.variables { merged[name] = spec.defaultValue }
        for (name, value) in values { merged[name] = value.revealed }
        let issuer = TokenRequestBuilder.renderURL(issuerTemplate, text: { merged[$0] })
        let line = connector.issuerLine
        func failure(_ message: String) -> Result<String, ConfigDiagnostic> {
            .failure(ConfigDiagnostic(file: connector.file, line: line, key: "issuer", message: message))
        }
        if let problem = TokenRequestBuilder.urlProblem(issuer, allowInsecureHTTP: connector.allowInsecureHTTP) {
            return failure(problem)
        }
        let document: DiscoveryDocument
        switch discover(issuer, tls, settings) {
        case .success(let found): document = found
        case .failure(let error): return failure("discovery failed: \(error.message)")
        }
        switch document.tokenEndpoint(issuer: issuer, auth: connector.clientAuth) {
        case .success(let url):
            if let problem = TokenRequestBuilder.urlProblem(url, allowInsecureHTTP: connector.allowInsecureHTTP) {
                return failure("the discovered token endpoint \(url): \(problem)")
            }
            return .success(url)
        case .failure(let error):
            return failure(error.message)
        }
    }

    /// What stands for another instance's token in the request rendered at load (the real one is taken at fetch time).
    public static func instanceTokenPlaceholder(_ name: String) -> String { "tokend.instance.\(name)" }

    public static func trimmingOneNewline(_ text: String) -> String {
        if text.hasSuffix("\r\n") { return String(text.dropLast(2)) }
        if text.hasSuffix("\n") { return String(text.dropLast()) }
        return text
    }
}
