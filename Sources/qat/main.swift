import Foundation
import QATCLI

// Line-buffered output, so progress shows up at once in pipes and log files too.
setvbuf(stdout, nil, _IOLBF, 0)
QATCommand.main()
