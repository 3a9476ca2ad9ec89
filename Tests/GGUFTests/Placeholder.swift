import XCTest
final class PlaceholderGGUFTests: XCTestCase { func testBuilds() {} }
