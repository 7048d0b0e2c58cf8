import QATCLI
QATCommand.main()
