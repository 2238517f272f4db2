import Testing

@testable import TokendCore

@Suite struct ConfigParserTests {
    static let valid = """
        token_url   = "http://127.0.0.1:9101/token"
        client_auth = "client_secret_basic"
        token_key   = "access_token"
        expires_in_key = "expires_in"

        [variables]
        client_id     = "alpha"
        client_secret = { file = "/etc/tokend/secrets/alpha" }
        scope         = "read"
        """

    @Test func parsesTheInlineForm() throws {
        let (definition, diagnostics) = parseInstance(Self.valid)
        #expect(diagnostics.isEmpty)
        let parsed = try #require(definition)
        #expect(parsed.name == "alpha")
        #expect(parsed.connector.tokenURL == "http://127.0.0.1:9101/token")
        #expect(parsed.connector.clientAuth == .clientSecretBasic)
        #expect(parsed.variables["client_id"] == .literal("alpha"))
        #expect(parsed.variables["client_secret"] == .file(path: "/etc/tokend/secrets/alpha"))
        #expect(parsed.variables["scope"] == .literal("read"))
        #expect(parsed.secretVariables.contains("client_secret"))
        #expect(parsed.line(ofVariable: "client_secret") == 8)
    }

    /// Variable lines are looked up in the file's text when a message needs one (not while parsing): the line of a
    /// key under [variables], the line of an inline `variables = { … }` table for its members, nil for a variable
    /// the file does not set.
    @Test func variableLinesComeFromTheTextWhenAsked() throws {
        let parsed = try #require(parseInstance(Self.valid).0)
        #expect(parsed.line(ofVariable: "client_id") == 7)
        #expect(parsed.line(ofVariable: "scope") == 9)
        #expect(parsed.line(ofVariable: "grant_type") == nil)
        let inline = try #require(
            parseInstance(
                """
                token_url = "http://127.0.0.1:1/token"

                variables = { client_id = "a", client_secret = "s" }
                """
            ).0
        )
        #expect(inline.line(ofVariable: "client_secret") == 3)
        #expect(inline.line(ofVariable: "scope") == nil)
    }

    @Test func unknownKeyNamesFileLineAndSuggestion() {
        let text = """
            token_url = "http://127.0.0.1:1/token"
            token_kye = "access_token"
            [variables]
            client_id = "a"
            client_secret = "s"
            """
        let (definition, diagnostics) = parseInstance(text)
        #expect(definition == nil)
        let error = diagnostics.first { $0.severity == .error }
        #expect(error?.description == "/etc/tokend/instances/alpha.toml:2: token_kye: unknown key (did you mean 'token_key'?)")
    }

    @Test func unknownVariableTableKeyAndBadTypeAreReported() {
        let text = """
            token_url = "http://127.0.0.1:1/token"
            client_auth = "client_secret_jwt_typo"
            [variables]
            client_id = "a"
            client_secret = { path = "/x" }
            """
        let (_, diagnostics) = parseInstance(text)
        let lines = diagnostics.map(\.description)
        #expect(lines.contains { $0.hasPrefix("/etc/tokend/instances/alpha.toml:2: client_auth: expected one of") })
        #expect(lines.contains { $0.hasPrefix("/etc/tokend/instances/alpha.toml:5: variables.client_secret: expected { file") })
    }

    @Test func missingRequiredVariablesAndKeys() {
        let (definition, diagnostics) = parseInstance("[variables]\nscope = \"x\"\n")
        #expect(definition == nil)
        let keys = Set(diagnostics.compactMap(\.key))
        #expect(keys == ["token_url", "variables.client_id", "variables.client_secret"])
    }

    @Test func noneAuthNeedsNoSecret() {
        let (definition, diagnostics) = parseInstance(
            "token_url = \"https://idp.example/token\"\nclient_auth = \"none\"\n[variables]\nclient_id = \"a\"\n"
        )
        #expect(diagnostics.isEmpty)
        #expect(definition?.connector.clientAuth == ClientAuthentication.none)
    }

    @Test func syntaxErrorCarriesTheLine() {
        let (definition, diagnostics) = parseInstance("token_url = \"http://127.0.0.1/t\"\n\n[variables\nclient_id = 1\n")
        #expect(definition == nil)
        #expect(diagnostics.count == 1)
        #expect(diagnostics[0].line == 3)
        #expect(diagnostics[0].description.hasPrefix("/etc/tokend/instances/alpha.toml:3: TOML syntax error"))
    }

    @Test func inlineSecretIsAWarningNotAnError() {
        let (definition, diagnostics) = parseInstance(
            "token_url = \"https://idp.example/token\"\n[variables]\nclient_id = \"a\"\nclient_secret = \"s3cret\"\n"
        )
        #expect(definition != nil)
        #expect(diagnostics.count == 1)
        #expect(diagnostics[0].severity == .warning)
        #expect(diagnostics[0].line == 4)
        #expect(!diagnostics[0].description.contains("s3cret"))
    }

    @Test func templateMustNameAVariable() {
        let (_, diagnostics) = parseInstance(
            "token_url = \"{{base}}/token\"\n[variables]\nclient_id = \"a\"\nclient_secret = { credential = \"x\" }\n"
        )
        #expect(diagnostics.map(\.description) == ["/etc/tokend/instances/alpha.toml:1: token_url: {{base}} names no variable"])
    }

    @Test(arguments: ["-bad", "", "a/b", "x y", ".hidden"])
    func rejectsBadInstanceNames(_ name: String) {
        let result = ConfigParser.parseInstance(name: name, file: "/x/\(name).toml", text: Self.valid)
        #expect(result.definition == nil)
        #expect(result.diagnostics.first?.message.contains("invalid instance name") == true)
    }

    @Test(arguments: ["alpha", "Alpha-1", "a.b_c-d", "9"])
    func acceptsGoodInstanceNames(_ name: String) {
        #expect(ConfigParser.isValidInstanceName(name))
    }

    @Test func parsesSettings() throws {
        let text = """
            socket_mode = "0600"
            log_level = "debug"
            startup_timeout = "5s"
            [refresh]
            ratio = 0.5
            min_lead = "0s"
            min_interval = "1s"
            retry_max = "2m"
            max_concurrent = 4
            [http]
            timeout = "3s"
            """
        let settings = try #require(ConfigParser.parseSettings(file: "/etc/tokend/tokend.toml", text: text).settings)
        #expect(settings.socketMode == 0o600)
        #expect(settings.logLevel == "debug")
        #expect(settings.startupTimeout == 5)
        #expect(settings.refresh.ratio == 0.5)
        #expect(settings.refresh.minLead == 0)
        #expect(settings.refresh.minInterval == 1)
        #expect(settings.refresh.retryMax == 120)
        #expect(settings.refresh.maxConcurrent == 4)
        #expect(settings.requestTimeout == 3)
    }

    @Test func connectionLimitsAndTheHeadDeadlineAreRead() throws {
        let defaults = try #require(ConfigParser.parseSettings(file: "tokend.toml", text: "").settings)
        #expect(defaults.connections == ConnectionAdmission.Limits())
        #expect(defaults.requestHeadTimeout == 10)
        let text = "max_connections = 256\nmax_connections_per_uid = 8\nrequest_head_timeout = \"1500ms\"\n"
        let settings = try #require(ConfigParser.parseSettings(file: "tokend.toml", text: text).settings)
        #expect(settings.connections == ConnectionAdmission.Limits(maxConnections: 256, perCaller: 8, adminReserve: 16))
        #expect(settings.requestHeadTimeout == 1.5)
        let reserve = try #require(
            ConfigParser.parseSettings(file: "tokend.toml", text: "max_connections = 16\nadmin_connections = 4\n").settings
        )
        #expect(reserve.connections.adminReserve == 4)
    }

    @Test func badConnectionLimitsAreRejectedWithLines() {
        let text = """
            max_connections = 8
            max_connections_per_uid = 0
            admin_connections = 8
            request_head_timeout = "10ms"
            """
        let (settings, errors) = ConfigParser.parseSettings(file: "tokend.toml", text: text)
        #expect(settings == nil)
        #expect(
            errors.map(\.description) == [
                "tokend.toml:2: max_connections_per_uid: expected a whole number from 1 to 1000000",
                "tokend.toml:3: admin_connections: must be less than max_connections (8): others need room too",
                "tokend.toml:4: request_head_timeout: expected at least 100ms",
            ]
        )
    }

    @Test func badSettingsAreRejectedWithLines() {
        let text = "log_level = \"loud\"\n[refresh]\nratio = 3\nmin_lead = \"soon\"\n"
        let (settings, errors) = ConfigParser.parseSettings(file: "tokend.toml", text: text)
        #expect(settings == nil)
        #expect(errors.map(\.line) == [1, 3, 4])
        #expect(
            errors[2].description
                == "tokend.toml:4: refresh.min_lead: expected a duration such as \"30s\", \"5m\" or \"1h\", found \"soon\""
        )
    }

    @Test(arguments: [
        ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172_800.0), ("45", 45.0),
    ])
    func parsesDurations(_ text: String, _ seconds: Double) {
        #expect(DurationParser.seconds(from: text) == seconds)
    }

    @Test(arguments: ["", "s", "5x", "-1s", "1h-", "ten seconds"])
    func rejectsBadDurations(_ text: String) {
        #expect(DurationParser.seconds(from: text) == nil)
    }

    @Test func keyLocatorFollowsTablesAndSkipsMultilineStrings() {
        let text = """
            # comment
            a = 1
            [t]
            "quoted.key" = 2
            long = \"\"\"
            x = 3
            \"\"\"
            [u.v]
            w = { inner = 1 }
            """
        let locator = TOMLKeyLocator(text: text)
        #expect(locator.line(of: ["a"]) == 2)
        #expect(locator.line(of: ["t"]) == 3)
        #expect(locator.line(of: ["t", "quoted.key"]) == 4)
        #expect(locator.line(of: ["t", "x"]) == 3)
        #expect(locator.line(of: ["u", "v", "w", "inner"]) == 9)
    }

    @Test func keyLocatorCountsCRLFLinesAndIgnoresBlanks() {
        let text = "# comment\r\n\ta = 1 \r\n[t]\r\n  b . c = 2\t\r\nlong = '''\r\nx = 3\r\n'''\r\nd = 4\r\n"
        let locator = TOMLKeyLocator(text: text)
        #expect(locator.line(of: ["a"]) == 2)
        #expect(locator.line(of: ["t"]) == 3)
        #expect(locator.line(of: ["t", "b", "c"]) == 4)
        #expect(locator.line(of: ["t", "x"]) == 3)
        #expect(locator.line(of: ["t", "d"]) == 8)
    }
}
