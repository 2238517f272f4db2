/// `{ instance = … }` inputs across the whole directory (SPEC §11): what one file alone cannot tell.
extension ConfigLoader {
    /// The `{ instance = … }` problems of each instance: inputs that no file defines, and cycles.
    ///
    /// A cycle's message names every file in it; an instance with a problem does not load.
    static func dependencyProblems(
        _ definitions: [String: InstanceDefinition],
        defined: Set<String>
    ) -> [String: [ConfigDiagnostic]] {
        var problems: [String: [ConfigDiagnostic]] = [:]
        let graph = DependencyGraph(definitions.values)
        guard !graph.isEmpty else { return [:] }
        for name in graph.inputs.keys.sorted() {
            guard let definition = definitions[name] else { continue }
            for (variable, input) in definition.instanceInputs where !defined.contains(input) {
                problems[name, default: []].append(
                    ConfigDiagnostic(
                        file: definition.file,
                        line: definition.line(ofVariable: variable),
                        key: "variables.\(variable)",
                        message: "no instance named '\(input)' (expected instances/\(input).toml)"
                    )
                )
            }
        }
        for cycle in graph.cycles() {
            let members = Set(cycle)
            let files = cycle.compactMap { definitions[$0]?.file }
            for name in cycle {
                guard let definition = definitions[name] else { continue }
                let variable = definition.instanceInputs.first { members.contains($0.instance) }
                problems[name, default: []].append(
                    ConfigDiagnostic(
                        file: definition.file,
                        line: variable.flatMap { definition.line(ofVariable: $0.variable) },
                        key: variable.map { "variables.\($0.variable)" },
                        message: "instances \(cycle.joined(separator: ", ")) take each other's tokens in a cycle "
                            + "(\(files.joined(separator: ", ")))"
                    )
                )
            }
        }
        return problems
    }
}
