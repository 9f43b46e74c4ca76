module kvc

go 1.19
