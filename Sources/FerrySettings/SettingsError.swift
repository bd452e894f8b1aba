/// What is wrong with an option or the config file, said so that the user can fix it: the
/// message names the option or key, the value given and what would be right.
public struct SettingsError: Error, CustomStringConvertible, Equatable, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
