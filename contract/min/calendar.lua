

























local calendar_time_ms_min=946684800000
local calendar_time_ms_max=253402300799999
local calendar_day_ms=86400000
local calendar_fixed_ms={second=1000,minute=60000,hour=3600000}


local function calendar_days_from_civil(year,month,day)
if month<=2 then year=year-1 end
local era=math.floor(year/400)
local year_of_era=year-era*400
local shifted=month-3
if month<=2 then shifted=month+9 end
local day_of_year=math.floor((153*shifted+2)/5)+day-1
local day_of_era=year_of_era*365+math.floor(year_of_era/4)
-math.floor(year_of_era/100)+day_of_year
return era*146097+day_of_era-719468
end


local function calendar_year_month(days)
days=days+719468
local era=math.floor(days/146097)
local day_of_era=days-era*146097
local year_of_era=math.floor((day_of_era-math.floor(day_of_era/1460)
+math.floor(day_of_era/36524)-math.floor(day_of_era/146096))/365)
local day_of_year=day_of_era
-(365*year_of_era+math.floor(year_of_era/4)-math.floor(year_of_era/100))
local shifted=math.floor((5*day_of_year+2)/153)
local month=shifted+3
if shifted>=10 then month=shifted-9 end
local year=year_of_era+era*400
if month<=2 then year=year+1 end
return year,month
end



local function calendar_first_reaching(lt,froms,offsets)
local n=#froms
for i=1,n do
local candidate=lt-offsets[i]*1000
if i>1 and candidate<froms[i]then candidate=froms[i]end
if i==n or candidate<froms[i+1]then return candidate end
end
end

local function calendar_period_start(lt,window)
local days=math.floor(lt/calendar_day_ms)
if window=='week'then
days=days-(days+3)%7
elseif window=='month'then
local year,month=calendar_year_month(days)
days=calendar_days_from_civil(year,month,1)
end
return days*calendar_day_ms
end

local function calendar_next_period(start,window)
if window=='day'then return start+calendar_day_ms end
if window=='week'then return start+7*calendar_day_ms end
local year,month=calendar_year_month(math.floor(start/calendar_day_ms))
if month==12 then return calendar_days_from_civil(year+1,1,1)*calendar_day_ms end
return calendar_days_from_civil(year,month+1,1)*calendar_day_ms
end

local function calendar_bounds(now,window,froms,offsets)
now=math.min(math.max(now,calendar_time_ms_min),calendar_time_ms_max)
local n,index=#froms,1
while index<n and froms[index+1]<=now do index=index+1 end
local length=calendar_fixed_ms[window]
if length then

local offset=offsets[index]*1000
local lt=now+offset
local start=lt-lt%length-offset
local finish=start+length
if index>1 and start<froms[index]then start=froms[index]end
if index<n and finish>froms[index+1]then finish=froms[index+1]end
return start,finish
end
if window~='day'and window~='week'and window~='month'then
error('calendar: unknown window '..tostring(window))
end

local reached=now+offsets[index]*1000
for i=2,index do
reached=math.max(reached,froms[i]-1+offsets[i-1]*1000)
end
local first=calendar_period_start(reached,window)
return calendar_first_reaching(first,froms,offsets),
calendar_first_reaching(calendar_next_period(first,window),froms,offsets)
end
