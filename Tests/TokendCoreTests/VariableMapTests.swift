import Testing
import TokendCore
import TokendTestSupport

/// The small sorted map that holds an instance's variables: it must behave like the dictionary it replaced.
@Suite struct VariableMapTests {
    @Test func behavesLikeADictionaryOverSeededEdits() {
        var random = SeededGenerator(seed: 0x5EED)
        let names = ["a", "client_id", "client_secret", "scope", "b", "z", "audience", "kid"]
        for _ in 0..<300 {
            var map = VariableMap<Int>()
            var dictionary: [String: Int] = [:]
            for _ in 0..<Int.random(in: 0...20, using: &random) {
                let name = names.randomElement(using: &random)!
                let value: Int? = Int.random(in: 0..<4, using: &random) == 0 ? nil : Int.random(in: 0..<100, using: &random)
                map[name] = value
                dictionary[name] = value
            }
            #expect(map.dictionary == dictionary)
            #expect(map.count == dictionary.count)
            #expect(map.keys == dictionary.keys.sorted())
            #expect(Array(map.map(\.key)) == dictionary.keys.sorted())
            for name in names { #expect(map[name] == dictionary[name]) }
            #expect(map == VariableMap(dictionary))
        }
    }

    @Test func equalityAndHashIgnoreTheOrderOfSetting() {
        var first = VariableMap<String>()
        first["b"] = "2"
        first["a"] = "1"
        let second: VariableMap<String> = ["a": "1", "b": "2"]
        #expect(first == second)
        #expect(first.hashValue == second.hashValue)
        #expect(first != ["a": "1"])
        #expect(first != ["a": "1", "b": "3"])
    }
}
