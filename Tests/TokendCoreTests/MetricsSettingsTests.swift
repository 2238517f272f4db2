import Testing

@testable import TokendCore

/// `[metrics]` in `tokend.toml`: the listen address, the textfile and its interval, with errors and warnings that
/// name the file, the line and the key.
@Suite struct MetricsSettingsTests {
    private func parse(_ text: String) -> (settings: DaemonSettings?, diagnostics: [ConfigDiagnostic]) {
        ConfigParser.parseSettings(file: "/etc/tokend/tokend.toml", text: text)
    }

    @Test func noTableMeansNothingBeyondTheSocket() throws {
        let settings = try #require(parse("").settings)
        #expect(settings.metrics == MetricsSettings())
        #expect(settings.metrics.listen == nil && settings.metrics.textfile == nil)
        #expect(settings.metrics.textfileInterval == 15)
    }

    @Test func parsesEveryKey() throws {
        let (settings, diagnostics) = parse(
            """
            [metrics]
            listen = "127.0.0.1:9464"
            textfile = "/var/lib/node_exporter/textfile_collector/tokend.prom"
            textfile_interval = "30s"
            """
        )
        #expect(diagnostics.isEmpty)
        let metrics = try #require(settings?.metrics)
        #expect(metrics.listen == MetricsListenAddress(host: "127.0.0.1", port: 9464, isIPv6: false, isLoopback: true))
        #expect(metrics.textfile == "/var/lib/node_exporter/textfile_collector/tokend.prom")
        #expect(metrics.textfileInterval == 30)
    }

    @Test(arguments: [
        ("127.0.0.1:9464", "127.0.0.1", 9464, false, true),
        ("127.1.2.3:1", "127.1.2.3", 1, false, true),
        ("[::1]:9464", "::1", 9464, true, true),
        ("[0:0:0:0:0:0:0:1]:80", "0:0:0:0:0:0:0:1", 80, true, true),
        ("[::ffff:127.0.0.1]:9464", "::ffff:127.0.0.1", 9464, true, true),
        ("0.0.0.0:9464", "0.0.0.0", 9464, false, false),
        ("192.0.2.10:65535", "192.0.2.10", 65535, false, false),
        ("[::]:9464", "::", 9464, true, false),
        ("[2001:db8::17]:9464", "2001:db8::17", 9464, true, false),
    ])
    func acceptsAddressLiterals(text: String, host: String, port: Int, isIPv6: Bool, isLoopback: Bool) throws {
        let address = try MetricsListenAddress.parse(text).get()
        #expect(address == MetricsListenAddress(host: host, port: port, isIPv6: isIPv6, isLoopback: isLoopback))
        #expect(address.description == text)
    }

    @Test(arguments: [
        "localhost:9464", "metrics.example.com:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
        "127.0.0.1:+80", "127.0.0.01:9464", "127.0.0.256:9464", "127.0.0:9464", "::1:9464", "[::1]", "[::1]9464",
        "[::1::2]:9464", "[1:2:3:4:5:6:7:8:9]:9464", "[12345::1]:9464", "[fe80::1%eth0]:9464", "[::1]:http", "",
    ])
    func refusesAnythingButAnAddressLiteralWithAPort(text: String) {
        #expect(throws: MetricsListenAddress.Problem.self) { try MetricsListenAddress.parse(text).get() }
    }

    @Test func aHostNameIsAnErrorWithFileLineAndKey() {
        let (settings, diagnostics) = parse("log_level = \"info\"\n\n[metrics]\nlisten = \"localhost:9464\"\n")
        #expect(settings == nil)
        let error = diagnostics.first
        #expect(diagnostics.count == 1)
        #expect(error?.file == "/etc/tokend/tokend.toml")
        #expect(error?.line == 4)
        #expect(error?.key == "metrics.listen")
        #expect(error?.severity == .error)
        #expect(error?.message.contains("host names are not resolved") == true)
    }

    /// Allowed, but `tokend check` (and the log at start and on a reload) say that anyone who reaches it can read it.
    @Test func aNonLoopbackAddressIsAWarningNotAnError() throws {
        let (settings, diagnostics) = parse("[metrics]\nlisten = \"0.0.0.0:9464\"\n")
        #expect(settings?.metrics.listen?.host == "0.0.0.0")
        let warning = try #require(diagnostics.first)
        #expect(diagnostics.count == 1)
        #expect(warning.severity == .warning)
        #expect(warning.line == 2 && warning.key == "metrics.listen")
        #expect(warning.description.hasPrefix("/etc/tokend/tokend.toml:2: warning: metrics.listen: 0.0.0.0:9464 is not a loopback address"))
        #expect(parse("[metrics]\nlisten = \"[::1]:9464\"\n").diagnostics.isEmpty)
    }

    @Test(arguments: [
        ("tokend.prom", "absolute path"),
        ("/var/lib/node_exporter/tokend.txt", "ending in .prom"),
        ("/var/lib/node_exporter/.prom", "ending in .prom"),
        ("/var/lib/node_exporter/.tokend.prom", "ending in .prom"),
        ("/var/lib/node_exporter/", "plain path"),
        ("/var/lib/../tmp/tokend.prom", "plain path"),
        ("/var/lib//tokend.prom", "plain path"),
        ("/var/lib/node_exporter/tok\\u0007end.prom", "control characters"),  // a TOML escape
    ])
    func refusesATextfileNodeExporterWouldNotRead(path: String, expected: String) throws {
        let (settings, diagnostics) = parse("[metrics]\ntextfile = \"\(path)\"\n")
        #expect(settings == nil)
        let error = try #require(diagnostics.first)
        #expect(error.key == "metrics.textfile" && error.line == 2)
        #expect(error.message.contains(expected), "\(error)")
    }

    @Test func theIntervalIsAtLeastASecondAndWarnsWithoutATextfile() throws {
        let tooShort = parse("[metrics]\ntextfile = \"/tmp/t.prom\"\ntextfile_interval = \"500ms\"\n")
        #expect(tooShort.settings == nil)
        #expect(tooShort.diagnostics.map(\.key) == ["metrics.textfile_interval"])
        let alone = parse("[metrics]\ntextfile_interval = \"1m\"\n")
        #expect(alone.settings?.metrics.textfileInterval == 60)
        #expect(alone.diagnostics.map(\.severity) == [.warning])
        #expect(alone.diagnostics.first?.message == "has no effect without textfile")
    }

    @Test func unknownKeysAndWrongTypesAreErrors() {
        let (settings, diagnostics) = parse("[metrics]\nlisten = 9464\nlistne = \"127.0.0.1:1\"\n")
        #expect(settings == nil)
        #expect(diagnostics.map(\.key) == ["metrics.listen", "metrics.listne"])
        #expect(diagnostics.last?.message == "unknown key (did you mean 'listen'?)")
        #expect(parse("metrics = \"127.0.0.1:9464\"\n").diagnostics.first?.message == "expected a table, found a string")
    }

    /// `tokend check` and a reload report exactly what the loader says: warnings of `tokend.toml` reach them.
    @Test func theLoaderReportsTheWarning() {
        let loaded = ConfigLoader.load(
            ConfigLoader.Input(
                settings: .success(.init(path: "/etc/tokend/tokend.toml", text: "[metrics]\nlisten = \"10.0.0.1:9464\"\n")),
                instances: []
            ),
            readSecret: { _ in .success(ConfigLoader.SecretText("x")) }
        )
        #expect(loaded.settings?.metrics.listen?.isLoopback == false)
        #expect(loaded.errors.isEmpty)
        #expect(loaded.diagnostics.map(\.severity) == [.warning])
    }
}
