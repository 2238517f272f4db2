import Testing

@testable import TokendCore

/// The copy-on-write box behind InstanceDefinition and ResolvedInstance: copies share it, a write never shows
/// through another copy, and equality is by value.
@Suite struct SharedBoxTests {
    @Test func aWriteToOneCopyLeavesTheOthersAlone() {
        let original = SharedBox(["a": 1])
        var copy = original
        copy.value["b"] = 2
        #expect(original.value == ["a": 1])
        #expect(copy.value == ["a": 1, "b": 2])
        var again = copy
        again.value["a"] = 9
        #expect(copy.value == ["a": 1, "b": 2])
        #expect(again.value == ["a": 9, "b": 2])
    }

    @Test func separateBoxesWithEqualValuesAreEqual() {
        #expect(SharedBox("x") == SharedBox("x"))
        #expect(SharedBox("x") != SharedBox("y"))
        #expect(Set([SharedBox("x"), SharedBox("x"), SharedBox("y")]).count == 2)
    }

    @Test func aResolvedInstanceCopyKeepsItsOwnAccessAndSink() throws {
        let connector = ConnectorDefinition(
            name: "a",
            file: "a.toml",
            isInline: true,
            tokenURL: "https://example.test/token",
            variables: ConnectorDefinition.builtinVariables(for: .clientSecretPost)
        )
        let definition = InstanceDefinition(
            name: "a",
            file: "a.toml",
            description: nil,
            connector: connector,
            variables: [:],
            secretVariables: [],
            source: nil,
            refresh: RefreshSettings.Overrides()
        )
        let resolved = try TokenRequestBuilder.resolve(definition, values: ["client_id": Secret("id")]).get()
        // It keeps the instance's values only; the connector's defaults are added when asked for.
        #expect(resolved.values == ["client_id": Secret("id")])
        #expect(resolved.variable("client_id")?.revealed == "id")
        #expect(resolved.variable("grant_type")?.revealed == "client_credentials")
        #expect(resolved.variable("no_such_variable") == nil)
        #expect(resolved.variables["grant_type"]?.revealed == "client_credentials")
        #expect(resolved.variables["client_id"]?.revealed == "id")
        var changed = resolved
        changed.access = AccessPolicy(uids: [7], gids: [])
        #expect(resolved.access == nil)
        #expect(changed.access == AccessPolicy(uids: [7], gids: []))
        #expect(changed != resolved)
        #expect(changed.fingerprint == resolved.fingerprint)
    }
}
