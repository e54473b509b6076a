import EtamKit
