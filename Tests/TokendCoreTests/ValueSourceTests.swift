import Foundation
import Testing
import TokendCore
import TokendTestSupport

/// SPEC §11 in the pure core: `{ instance = … }` values, the dependency graph and its config errors, and the state
/// machine's answers to an input that changed or is missing.
@Suite struct ValueSourceTests {
    /// An inline instance whose `subject_token` is `source` (a TOML inline table).
    static func exchange(_ source: String, extra: String = "") -> String {
        """
        token_url = "http://127.0.0.1:9000/token"
        client_auth = "none"
        \(extra)
        [body]
        grant_type = "urn:ietf:params:oauth:grant-type:token-exchange"
        subject_token = "{{subject_token}}"
        [variables]
        client_id = "x"
        subject_token = \(source)
        """
    }

    /// Loads instance texts as the config directory would, every `{ file = … }` holding `secret`.
    static func load(_ texts: [String: String]) -> ConfigLoader.Loaded {
        let input = ConfigLoader.Input(
            settings: nil,
            instances: texts.sorted { $0.key < $1.key }.map { name, text in
                (name, .success(ConfigLoader.File(path: "/cfg/instances/\(name).toml", text: text)))
            }
        )
        return ConfigLoader.load(input) { _ in .success(.init("secret")) }
    }

    @Test func anInstanceValueNamesAnotherInstanceButNeverItself() throws {
        let (parsed, diagnostics) = parseInstance(Self.exchange(#"{ instance = "upstream" }"#), name: "down")
        #expect(diagnostics.filter { $0.severity == .error }.isEmpty, "\(diagnostics)")
        let definition = try #require(parsed)
        #expect(definition.variables["subject_token"] == .instance(name: "upstream"))
        #expect(definition.instanceInputs.map(\.instance) == ["upstream"])
        #expect(definition.hasLiveInputs)
        #expect(definition.secretVariables.contains("subject_token"))

        let (own, ownErrors) = parseInstance(Self.exchange(#"{ instance = "down" }"#), name: "down")
        #expect(own == nil)
        #expect(ownErrors.contains { $0.message.contains("its own token") && $0.line == 9 }, "\(ownErrors)")
        let (bad, badErrors) = parseInstance(Self.exchange(#"{ instance = "../etc" }"#), name: "down")
        #expect(bad == nil)
        #expect(badErrors.contains { $0.message.contains("expected an instance name") }, "\(badErrors)")
    }

    @Test func boundToInputIsReadAtTheTopOrInRefresh() throws {
        let subject = #"{ instance = "up" }"#
        let (top, _) = parseInstance("bound_to_input = true\n" + Self.exchange(subject), name: "down")
        let (inRefresh, _) = parseInstance(Self.exchange(subject) + "\n[refresh]\nbound_to_input = true\n", name: "down")
        let (overruled, _) = parseInstance(
            "bound_to_input = false\n" + Self.exchange(subject) + "\n[refresh]\nbound_to_input = true\n",
            name: "down"
        )
        let (unset, _) = parseInstance(Self.exchange(subject), name: "down")
        #expect(RefreshSettings().applying(try #require(top).refresh).boundToInput)
        #expect(RefreshSettings().applying(try #require(inRefresh).refresh).boundToInput)
        #expect(!RefreshSettings().applying(try #require(overruled).refresh).boundToInput)
        #expect(!RefreshSettings().applying(try #require(unset).refresh).boundToInput)
    }

    @Test func theGraphFindsEveryCycleOnceAndTheDependentsInOrder() throws {
        func definition(_ name: String, _ inputs: [String]) throws -> InstanceDefinition {
            var text = "token_url = \"http://127.0.0.1:9000/token\"\nclient_auth = \"none\"\n[variables]\nclient_id = \"x\"\n"
            for (index, input) in inputs.enumerated() { text += "in\(index) = { instance = \"\(input)\" }\n" }
            let (parsed, diagnostics) = parseInstance(text, name: name)
            return try #require(parsed, "\(diagnostics)")
        }
        let graph = DependencyGraph([
            try definition("a", ["b"]), try definition("b", ["a"]),  // a 2-cycle
            try definition("c", ["d"]), try definition("d", ["e"]), try definition("e", ["c"]),  // a 3-cycle
            try definition("f", ["g"]), try definition("h", ["f", "g"]),  // no cycle
        ])
        #expect(graph.cycles() == [["a", "b"], ["c", "d", "e"]])
        #expect(graph.dependents["g"] == ["f", "h"])
        #expect(graph.allDependents(of: "g") == ["f", "h"])
        #expect(graph.allDependents(of: "f") == ["h"])
        #expect(DependencyGraph([try definition("f", ["g"]), try definition("h", ["f"])]).cycles().isEmpty)
    }

    @Test func aCycleIsAnErrorInEveryFileOfItAndAnUnknownInputInItsOwn() {
        let loaded = Self.load([
            "one": Self.exchange(#"{ instance = "two" }"#),
            "two": Self.exchange(#"{ instance = "one" }"#),
            "lost": Self.exchange(#"{ instance = "nobody" }"#),
            "fine": Self.exchange(#"{ instance = "base" }"#),
            "base": Self.exchange(#"{ file = "/s/subject" }"#),
        ])
        #expect(loaded.failedInstances == ["one", "two", "lost"])
        #expect(Set(loaded.instances.keys) == ["fine", "base"])
        for name in ["one", "two"] {
            let error = loaded.errors.first { $0.file == "/cfg/instances/\(name).toml" }
            #expect(error?.line == 9, "\(loaded.errors)")
            #expect(error?.message.contains("/cfg/instances/one.toml, /cfg/instances/two.toml") == true, "\(loaded.errors)")
        }
        let lost = loaded.errors.first { $0.file == "/cfg/instances/lost.toml" }
        #expect(lost?.message == "no instance named 'nobody' (expected instances/nobody.toml)")
        #expect(lost?.key == "variables.subject_token")
        // The request was checked with a stand-in for the other instance's token.
        #expect(loaded.instances["fine"]?.values["subject_token"]?.revealed == ConfigLoader.instanceTokenPlaceholder("base"))
    }

    /// An input defined by a broken file is not unknown: the dependent loads and waits for it.
    @Test func anInputWhoseFileIsBrokenIsNotUnknown() {
        let loaded = Self.load(["down": Self.exchange(#"{ instance = "up" }"#), "up": "token_url = \n"])
        #expect(loaded.instances["down"] != nil)
        #expect(loaded.failedInstances == ["up"])
    }

    @Test func theFingerprintNamesAnInstanceInputNotItsToken() throws {
        let loaded = Self.load(["down": Self.exchange(#"{ instance = "up" }"#), "up": Self.exchange(#"{ file = "/s/subject" }"#)])
        let down = try #require(loaded.instances["down"])
        var other = down
        other.values["subject_token"] = Secret("a real token")
        let rerendered = try TokenRequestBuilder.resolve(other.definition, values: other.values).get()
        #expect(rerendered.fingerprint == down.fingerprint)
    }

    @Test func anInputThatChangedRefetchesButNotBeforeMinInterval() {
        var settings = RefreshSettings()
        settings.minInterval = 30
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        var random = SplitMix64(seed: 1)
        #expect(machine.started(cached: nil, now: epoch, using: &random) == [.fetch])
        // While the fetch is in flight nothing changes: the daemon compares again when it ends.
        #expect(machine.inputChanged(now: epoch.addingTimeInterval(1)).isEmpty)
        _ = machine.receivedAndStored(token(obtained: epoch, lifetime: 3600), using: &random)
        let soon = epoch.addingTimeInterval(10)
        #expect(machine.inputChanged(now: soon) == [.scheduleRefresh(at: epoch.addingTimeInterval(30))])
        #expect(machine.nextAttempt == epoch.addingTimeInterval(30))
        // Already due sooner: nothing new.
        #expect(machine.inputChanged(now: soon).isEmpty)
        let later = epoch.addingTimeInterval(100)
        var fresh = InstanceStateMachine(policy: RefreshPolicy(settings))
        _ = fresh.started(cached: token(obtained: epoch, lifetime: 3600), now: epoch, using: &random)
        #expect(fresh.inputChanged(now: later) == [.scheduleRefresh(at: later)])
    }

    /// A fetch that waits for an input's first token does not count against `min_interval`, and settles the
    /// instance only when the input has settled.
    @Test func aMissingInputIsReportedWithoutSpendingMinInterval() {
        var settings = RefreshSettings()
        settings.minInterval = 30
        var machine = InstanceStateMachine(policy: RefreshPolicy(settings))
        var random = SplitMix64(seed: 1)
        #expect(machine.started(cached: nil, now: epoch, using: &random) == [.fetch])
        let failure = FetchFailure(kind: .transient, code: "dependency_failed", message: "input instance 'up' has no token")
        _ = machine.inputMissing(failure, settles: false, now: epoch, using: &random)
        #expect(!machine.hasSettled)
        #expect(!machine.isFetching)
        #expect(machine.lastFetchStarted == nil)
        #expect(machine.reportedFailure?.code == "dependency_failed")
        // The input's token arrives half a second later, before the backoff's retry: the fetch may start at once.
        let arrival = epoch.addingTimeInterval(0.5)
        #expect(machine.inputChanged(now: arrival) == [.scheduleRefresh(at: arrival)])
        _ = machine.inputMissing(failure, settles: true, now: epoch, using: &random)
        #expect(machine.hasSettled)
    }

    @Test func anInputProblemIsReportedFirstAndDegradesAServedToken() {
        var machine = InstanceStateMachine(policy: RefreshPolicy(RefreshSettings()))
        var random = SplitMix64(seed: 1)
        _ = machine.started(cached: token(obtained: epoch, lifetime: 3600), now: epoch, using: &random)
        #expect(machine.state(at: epoch) == .valid)
        machine.inputProblemChanged(FetchFailure(kind: .transient, code: "input_unreadable", message: "variable x: gone"))
        #expect(machine.state(at: epoch) == .degraded)
        #expect(machine.reportedFailure?.code == "input_unreadable")
        machine.inputProblemChanged(nil)
        #expect(machine.state(at: epoch) == .valid)
    }
}
